"""The per-architecture configuration tables (core/kernels/tiles.py): what the autotuner and the row kernels
may launch on a GPU of a given compute capability, decided on the CPU with a fake capability."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from vssflow.core.kernels import dispatch, tiles

HOPPER, AMPERE, ADA, BLACKWELL = (9, 0), (8, 0), (8, 9), (10, 0)


def test_families_by_capability():
    assert tiles.arch_family(HOPPER) == 90
    assert tiles.arch_family(BLACKWELL) == 90
    assert tiles.arch_family(AMPERE) == 80
    assert tiles.arch_family(ADA) == 80
    assert tiles.arch_family((12, 0)) == 80  # consumer Blackwell: 99 KiB of shared memory per block
    with pytest.raises(ValueError, match="compute capability >= 8.0"):
        tiles.arch_family((7, 5))


def test_hopper_keeps_every_vetted_tile_including_128x128_at_head_dim_128():
    for kernel in tiles.KERNELS:
        for d in tiles.HEAD_DIMS:
            for mask in (False, True):
                kept = tiles.attention_tiles(kernel, d, mask, 90)
                if (kernel, d, mask) not in (("fwd", 128, True), ("dkdv", 128, True)):
                    assert kept == tiles.TILES[kernel][d]
    # 224 KiB of shared memory, no spill without a mask; with a mask it spills 8 B on sm_90
    assert (128, 128, 8, 3) in tiles.pick_tiles("fwd", 128, False, HOPPER, 4096, 4096)
    assert (128, 128, 8, 3) not in tiles.pick_tiles("fwd", 128, True, HOPPER, 4096, 4096)
    assert len(tiles.attention_tiles("fwd", 128, True, 90)) == len(tiles.TILES["fwd"][128]) - 1
    # dK/dV 32x128 w8 s4 at head dim 128 spills 48 B with a mask in fp16 on sm_90 (bf16 is clean): dropped
    assert (32, 128, 8, 4) not in tiles.attention_tiles("dkdv", 128, True, 90)
    assert (32, 128, 8, 4) in tiles.attention_tiles("dkdv", 128, False, 90)


@pytest.mark.parametrize(
    "kernel, d, mask, tile",
    [
        ("fwd", 128, False, (128, 128, 8, 3)),  # 224 KiB of shared memory: Hopper only
        ("fwd", 128, False, (64, 32, 4, 3)),
        ("fwd", 128, False, (64, 64, 4, 3)),  # spills on sm_80 without a mask
        ("fwd", 128, True, (128, 64, 8, 2)),  # ... and this one with a mask
        ("dkdv", 64, True, (64, 128, 8, 3)),
        ("dkdv", 64, False, (64, 128, 8, 3)),
        ("dkdv", 128, True, (32, 128, 8, 2)),
        ("dq", 128, False, (64, 64, 8, 3)),
    ],
)
def test_ampere_drops_the_tiles_that_spill_there(kernel, d, mask, tile):
    assert tile in tiles.TILES[kernel][d]
    assert tile not in tiles.attention_tiles(kernel, d, mask, 80)
    for capability in (AMPERE, ADA):
        lq = lk = 8192
        assert tile not in tiles.pick_tiles(kernel, d, mask, capability, lq, lk)
    assert tile in tiles.pick_tiles(kernel, d, mask, HOPPER, 8192, 8192)


def test_ampere_drops_only_for_the_mask_flag_that_spills():
    # 64x64 w4 s3 at head dim 128 spills on sm_80 without a mask, not with one.
    assert (64, 64, 4, 3) in tiles.attention_tiles("fwd", 128, True, 80)
    assert (64, 64, 4, 3) not in tiles.attention_tiles("fwd", 128, False, 80)
    # dQ at head dim 128: the masked variant of 128x64 s3 is clean.
    assert (128, 64, 8, 3) in tiles.attention_tiles("dq", 128, True, 80)


def test_every_case_keeps_a_tile_and_drops_are_real_tiles():
    for kernel in tiles.KERNELS:
        for d in tiles.HEAD_DIMS:
            for mask in (False, True):
                for capability in (HOPPER, AMPERE):
                    assert tiles.pick_tiles(kernel, d, mask, capability, 16, 16)
                    assert tiles.attention_tiles(kernel, d, mask, tiles.arch_family(capability))
        # a drop rule naming a tile the table does not have would silently do nothing
        for arch in tiles.ARCHS:
            for d, rules in tiles._DROP[arch].get(kernel, {}).items():
                assert set(rules) <= set(tiles.TILES[kernel][d]), (arch, kernel, d)
    assert tiles.all_attention_tiles("fwd") == sorted({t for ts in tiles.TILES["fwd"].values() for t in ts})


def test_short_problems_skip_tiles_far_larger_than_them():
    short = tiles.pick_tiles("fwd", 64, False, HOPPER, 16, 16)
    assert short and all(m <= 32 and n <= 32 for m, n, _, _ in short)
    long = tiles.pick_tiles("fwd", 64, False, HOPPER, 4096, 4096)
    assert long == tiles.TILES["fwd"][64]


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="head dim"):
        tiles.attention_tiles("fwd", 96, False, 90)
    with pytest.raises(ValueError, match="unknown attention kernel"):
        tiles.attention_tiles("bwd", 64, False, 90)
    with pytest.raises(ValueError, match="architecture family"):
        tiles.attention_tiles("fwd", 64, False, 70)
    with pytest.raises(ValueError, match="unknown row op"):
        tiles.max_row_width("attention", 90)


def test_row_width_limits_per_family():
    # the widest rows whose backward compiles without spills in fp32, fp16 and bf16
    assert tiles.max_row_width("adaln_modulate", 90) == tiles.max_row_width("adaln_modulate", 80) == 4096
    assert tiles.max_row_width("gated_residual", 90) == tiles.max_row_width("gated_residual", 80) == 8192
    assert tiles.max_row_width("rms_norm", 90) == 8192
    assert tiles.max_row_width("rms_norm", 80) == tiles.MAX_ROW_WIDTH == dispatch.MAX_ROW_WIDTH
    assert tiles.max_row_width("qk_norm_rope", 90) == 4096
    assert tiles.max_row_width("qk_norm_rope", 80) == 8192
    assert tiles.row_widths("adaln_modulate", 80)[-1] == 4096
    assert tiles.row_widths("rope", 90) == [2**i for i in range(5, 15)]


def test_row_tile_geometry():
    # ~2K values per tile, at most 32 rows; one warp per 256 values, 4 to 16
    assert [tiles.rows_per_block(w) for w in (32, 64, 100, 128, 2048, 4096, 16384)] == [32, 32, 16, 16, 1, 1, 1]
    assert tiles.warps_for(32, 32) == 4
    assert tiles.warps_for(16, 128) == 8
    assert tiles.warps_for(1, 16384) == 16


def test_dispatch_sends_rows_too_wide_for_the_gpu_to_pytorch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: AMPERE)
    cuda = torch.device("cuda", 0)
    assert dispatch.triton_unsupported(cuda, "adaln_modulate", torch.bfloat16, width=4096) is None
    assert "up to 4096" in dispatch.triton_unsupported(cuda, "adaln_modulate", torch.bfloat16, width=8192)
    assert dispatch.triton_unsupported(cuda, "rms_norm", torch.bfloat16, width=16384) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: HOPPER)
    assert dispatch.triton_unsupported(cuda, "gated_residual", torch.bfloat16, width=8192) is None
    assert "up to 8192" in dispatch.triton_unsupported(cuda, "gated_residual", torch.bfloat16, width=16384)
    assert "up to 8192" in dispatch.triton_unsupported(cuda, "rms_norm", torch.float32, width=16384)
    assert dispatch.triton_unsupported(cuda, "rope", torch.float32, width=16384) is None


def _aot_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "aot_compile_check.py"
    spec = importlib.util.spec_from_file_location("aot_compile_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("aot_compile_check", module)
    spec.loader.exec_module(module)
    return module


def test_compile_check_enumerates_exactly_the_tiles_each_family_may_pick():
    pytest.importorskip("triton")
    aot = _aot_module()
    for arch in tiles.ARCHS:
        seen = {}
        for case in aot.attention_cases(arch, ("bf16",)):
            if "preprocess" in case.kernel:
                continue
            kernel = {"_attn_fwd": "fwd", "_attn_bwd_dkdv": "dkdv", "_attn_bwd_dq": "dq"}[case.kernel.split(":")[1]]
            c = case.constexprs
            seen.setdefault((kernel, c["HEAD_DIM"], c["HAS_MASK"]), []).append(
                (c["BLOCK_M"], c["BLOCK_N"], case.num_warps, case.num_stages))
        for kernel in tiles.KERNELS:
            for d in tiles.HEAD_DIMS:
                for mask in (False, True):
                    assert seen[(kernel, d, mask)] == tiles.attention_tiles(kernel, d, mask, arch)
        widths = {}
        for case in aot.row_cases(arch, ("bf16",)):
            op = case.label.split(" ")[0]
            widths.setdefault(op, set()).add(case.constexprs.get("BLOCK_W", case.constexprs.get("D")))
        assert max(widths["adaln"]) == tiles.max_row_width("adaln_modulate", arch)
        assert max(widths["gated"]) == tiles.max_row_width("gated_residual", arch)
        assert max(widths["rms_norm"]) == tiles.max_row_width("rms_norm", arch)
    cases = aot.enumerate_cases(tiles.ARCHS, ("bf16",))
    assert len({aot._key(c) for c in cases}) == len(cases)  # every compile once


def test_autotuner_prune_hook_keeps_the_family_tiles(monkeypatch):
    triton = pytest.importorskip("triton")
    from vssflow.core.kernels import flash_attention as fa

    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
               for m, n, w, s in tiles.all_attention_tiles("dkdv")]
    args = {"Q": torch.empty(1), "LQ_KEY": 4096, "LK_KEY": 4096}
    for capability, arch in ((AMPERE, 80), (HOPPER, 90)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        kept = fa._pruner("dkdv")(configs, args, HEAD_DIM=128, HAS_MASK=True)
        assert [fa._tile(c) for c in kept] == sorted(tiles.attention_tiles("dkdv", 128, True, arch))
    assert [fa._tile(c) for c in kept] != [(32, 64, 8, 3)]  # Hopper keeps more than Ampere's one masked tile
