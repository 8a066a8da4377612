"""Backend selection: "auto" rules, the env override, logged fallbacks, and a triton-free import."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

import vssflow.core.kernels as kernels
from tests.kernels.kernel_asserts import assert_verbose_allclose
from vssflow.core.kernels import BACKENDS, attention, dispatch, resolve_backend

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Each test sees no env override and an empty warn-once memory."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "_warned", set())


def fallback_lines(caplog) -> list[str]:
    """Log lines the kernels emitted."""
    return [r.getMessage() for r in caplog.records if r.name == "vssflow.kernels"]


def test_backends_constant_and_auto_on_cpu():
    assert BACKENDS == ("auto", "triton", "sdpa", "reference")
    assert resolve_backend("auto", CPU) == "sdpa"
    assert resolve_backend(None, "cpu") == "sdpa"
    assert resolve_backend("reference", CPU) == "reference"
    assert resolve_backend("sdpa", CPU, op="adaln_modulate") == "sdpa"


def test_env_var_overrides_auto_only(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert resolve_backend("auto", CPU) == "reference"
    assert resolve_backend("sdpa", CPU) == "sdpa"  # an explicit recipe choice wins
    monkeypatch.setenv(dispatch.ENV_VAR, "flash")
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        resolve_backend("auto", CPU)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="unknown kernel backend"):
        resolve_backend("cudnn", CPU)
    with pytest.raises(TypeError, match="unknown keywords"):
        resolve_backend("auto", CPU, head_size=64)
    q = torch.randn(1, 3, 4, 8)
    with pytest.raises(ValueError, match="multiple"):
        attention(q, torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))
    with pytest.raises(TypeError, match="bool"):
        attention(q, q, q, key_padding_mask=torch.ones(1, 4))


def test_triton_on_cpu_without_interpreter_falls_back_with_one_line(monkeypatch, caplog):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    caplog.set_level(logging.WARNING, logger="vssflow.kernels")
    for _ in range(3):
        assert resolve_backend("triton", CPU, dtype=torch.float16, head_dim=64) == "sdpa"
    lines = fallback_lines(caplog)
    assert len(lines) == 1 and "TRITON_INTERPRET" in lines[0] and "sdpa" in lines[0]


@pytest.mark.parametrize(
    "dtype,head_dim,needle", [(torch.float32, 96, "head dims"), (torch.float64, 64, "float64")], ids=["d96", "fp64"]
)
def test_unsupported_attention_falls_back_to_sdpa_and_stays_correct(monkeypatch, caplog, dtype, head_dim, needle):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    caplog.set_level(logging.WARNING, logger="vssflow.kernels")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, head_dim, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.tensor([[True, True, False, True, False], [False] * 5])
    for _ in range(2):
        out = attention(q, k, v, key_padding_mask=mask, backend="triton")
    lines = fallback_lines(caplog)
    assert len(lines) == 1 and needle in lines[0], lines
    ref = attention(q, k, v, key_padding_mask=mask, backend="reference")
    assert_verbose_allclose(out, ref, 1e-5, 1e-5, name="fallback out")
    assert torch.count_nonzero(out[1]) == 0


def test_wide_rows_fall_back_for_row_kernels(monkeypatch, caplog):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    caplog.set_level(logging.WARNING, logger="vssflow.kernels")
    width = dispatch.MAX_ROW_WIDTH + 1
    assert resolve_backend("triton", CPU, op="rms_norm", dtype=torch.float32, width=width) == "sdpa"
    assert len(fallback_lines(caplog)) == 1


def test_every_backend_is_differentiable_on_cpu():
    q = torch.randn(1, 2, 3, 8, requires_grad=True)
    for backend in ("auto", "sdpa", "reference"):
        q.grad = None
        attention(q, q, q, backend=backend).sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()
        x = torch.randn(1, 3, 8, requires_grad=True)
        kernels.gated_residual(x, x[:, 0], kernels.adaln_modulate(x, x[:, 0], x[:, 1], backend=backend),
                               backend=backend).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_import_does_not_import_triton():
    code = "import sys, vssflow.core.kernels as k; k.attention; assert 'triton' not in sys.modules, 'triton'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_trainable_rope_tables_take_the_differentiable_path(monkeypatch, caplog):
    """The triton row kernels give cos/sin no gradient; tables that need one must not lose it silently."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    caplog.set_level(logging.WARNING, logger="vssflow.kernels")
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, 6, 32, generator=g) for _ in range(2))
    angles = torch.randn(6, 8, generator=g)
    grads = {}
    for backend in ("triton", "reference"):
        phase = angles.clone().requires_grad_(True)
        cos, sin = phase.cos(), phase.sin()
        qo, ko = kernels.qk_norm_rope(q, k, cos=cos, sin=sin, backend=backend, k_cos=cos, k_sin=sin)
        (qo.square().sum() + (ko * qo).sum()).backward()
        grads[backend] = phase.grad
    assert any("require grad" in line for line in fallback_lines(caplog))
    assert grads["triton"] is not None and grads["triton"].abs().sum() > 0
    assert_verbose_allclose(grads["triton"], grads["reference"], 1e-4, 1e-4, name="d phase")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_keys_are_never_rotated_with_the_query_table_when_lengths_match(backend, monkeypatch):
    """Cross-attention with a query table and no key table leaves the keys alone, also when Lq == Lk.

    The paper recipe meets this exactly: 51 context tokens (50 frames + 1 speaker) against 1 + 50 queries.
    """
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, 7, 32, generator=g) for _ in range(2))
    cos, sin = kernels.rope_cos_sin(torch.arange(7, dtype=torch.float32) * 1.5, 16)
    qo, ko = kernels.qk_norm_rope(q, k, cos=cos, sin=sin, norm=False, backend=backend)
    assert torch.equal(ko, k)
    assert not torch.allclose(qo, q)
    qo2, ko2 = kernels.qk_norm_rope(q, k, cos=cos, sin=sin, norm=False, backend=backend, k_cos=cos, k_sin=sin)
    torch.testing.assert_close(qo2, qo)
    assert not torch.allclose(ko2, k)
