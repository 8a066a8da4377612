"""Built-in encoders: weights load back identically, pooling and freezing, masks, timing, crops, phoneme layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from vssflow.core.errors import ContractError, PluginError
from vssflow.core.interfaces import Condition
from vssflow.registry import create

TINY_VIT = {"model": "test_vit", "size": 32, "fps": 10.0}


def frames(batch: int = 2, length: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand((batch, length, 3, size, size), generator=torch.Generator().manual_seed(seed))


# timm-video ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    """A random test_vit encoder and its weights saved as safetensors and as a timm .pth checkpoint."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    enc = create("encoder", "timm-video", **TINY_VIT, frozen=False)
    root = tmp_path_factory.mktemp("vit")
    save_file(enc.net.state_dict(), str(root / "vit.safetensors"))
    torch.save({"state_dict": enc.net.state_dict(), "epoch": 3}, root / "vit.pth")
    return enc, root


@pytest.mark.parametrize("filename", ["vit.safetensors", "vit.pth"])
def test_timm_video_loads_local_weights_identically(saved_vit, filename):
    enc, root = saved_vit
    torch.manual_seed(99)  # a different random init, overwritten by the file
    loaded = create("encoder", "timm-video", **TINY_VIT, checkpoint_path=str(root / filename))
    x = frames()
    assert torch.equal(loaded(x).features, enc(x).features)


def test_timm_video_rejects_weights_of_another_model(saved_vit):
    _, root = saved_vit
    with pytest.raises(PluginError, match=r"vit\.safetensors does not fit the model"):
        create("encoder", "timm-video", model="test_vit2", size=32, checkpoint_path=str(root / "vit.safetensors"))


def test_timm_video_missing_checkpoint_and_unknown_model_are_clear_errors(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        create("encoder", "timm-video", **TINY_VIT, checkpoint_path=str(tmp_path / "nope.safetensors"))
    with pytest.raises(PluginError, match="timm has no model named 'vit_tiny_patch16_2244'"):
        create("encoder", "timm-video", model="vit_tiny_patch16_2244")


def test_clip_preset_matches_the_paper_contract():
    enc = create("encoder", "clip-vit-b16", size=32)  # random weights; 32 px keeps the test fast
    contract = enc.contract
    assert (enc.dim, enc.fps, contract.fps) == (768, 10.0, 10.0)
    assert contract.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # OpenAI CLIP
    assert contract.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    assert create("encoder", "clip-vit-b16").contract.size == (224, 224)
    # CLS token after the final norm, before the 512-d projection
    x = frames(1, 2)
    out = enc(x)
    tokens = enc.net.forward_features(enc.normalise(x.flatten(0, 1)))
    assert torch.allclose(out.features[0], tokens[:, 0], atol=1e-6)


def test_timm_pooling_modes():
    x = frames(2, 3)
    torch.manual_seed(0)
    cls = create("encoder", "timm-video", **TINY_VIT, pooling="cls")
    torch.manual_seed(0)
    mean = create("encoder", "timm-video", **TINY_VIT, pooling="mean")
    torch.manual_seed(0)
    tokens = create("encoder", "timm-video", **TINY_VIT, pooling="tokens")
    a, b, c = cls(x), mean(x), tokens(x)
    n = tokens.net.patch_embed.num_patches  # 4 patches of 16 px at 32 px
    assert a.features.shape == b.features.shape == (2, 3, 64)
    assert c.features.shape == (2, 3 * n, 64) and c.fps is None and a.fps == 10.0
    # same weights: mean pooling is the mean of the patch tokens
    assert torch.allclose(b.features, c.features.view(2, 3, n, 64).mean(dim=2), atol=1e-5)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert tokens(x, mask).mask.view(2, 3, n).eq(mask[..., None]).all()


def test_frozen_timm_encoder_stays_in_eval_and_builds_no_graph():
    enc = create("encoder", "timm-video", **TINY_VIT, frozen=True)
    enc.train()
    assert not enc.net.training and enc.frozen
    assert not enc(frames()).features.requires_grad


def test_recipe_swaps_tiny_cnn_for_timm_video_by_changing_one_line():
    recipe = """
conditions:
  video:
    encoder: {name: tiny-cnn, params: {fps: 10.0, size: 32, dim: 32}}
    aggregator: {name: cross-attn}
"""
    swapped = recipe.replace(
        "{name: tiny-cnn, params: {fps: 10.0, size: 32, dim: 32}}",
        "{name: timm-video, params: {model: test_vit, fps: 10.0, size: 32, frozen: false}}",
    )
    assert sum(a != b for a, b in zip(recipe.splitlines(), swapped.splitlines(), strict=True)) == 1
    x = frames(2, 5)
    for text in (recipe, swapped):
        ref = yaml.safe_load(text)["conditions"]["video"]["encoder"]
        enc = create("encoder", ref["name"], **ref["params"])
        assert enc.contract.modality == "video" and enc.contract.size == (32, 32) and enc.contract.fps == 10.0
        out = enc(x)
        assert isinstance(out, Condition) and out.fps == enc.fps == 10.0
        assert out.features.shape == (2, 5, enc.dim) and out.mask.all()


def test_video_encoders_reject_frames_of_the_wrong_size():
    enc = create("encoder", "tiny-cnn", size=32, dim=16, channels=[4])
    with pytest.raises(ContractError, match=r"encoder 'tiny-cnn': expected frames of size \(H, W\) = \(32, 32\), got \(64, 64\)"):
        enc(frames(size=64))
    with pytest.raises(ContractError, match="expected input at 10 fps, got 25 fps"):
        enc(frames(), fps=25.0)


# trainable video encoders -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-cnn", "motion", "lip"])
def test_padded_frames_do_not_leak_into_valid_ones(name):
    size = 48 if name == "lip" else 32
    enc = create("encoder", name, size=size, dim=16, channels=[4, 8]).eval()
    x = frames(1, 8, size)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    noisy = x.clone()
    noisy[:, 5:] = torch.rand_like(noisy[:, 5:])
    a, b = enc(x, mask), enc(noisy, mask)
    assert torch.allclose(a.features[:, :5], b.features[:, :5], atol=1e-5)
    assert torch.equal(a.mask, mask)


def test_motion_features_change_only_around_the_moment_of_motion():
    enc = create("encoder", "motion", size=32, dim=16, channels=[4, 8], temporal_layers=1).eval()
    static = torch.full((1, 20, 3, 32, 32), 0.3)
    moving = static.clone()
    moving[:, 10:, :, 8:16, 8:16] = 1.0  # a square appears at frame 10
    diff = (enc(moving).features - enc(static).features).abs().amax(dim=-1)[0]  # (L,)
    assert enc.fps == 25.0
    assert diff[:9].max() < 1e-5  # before the event: nothing (one temporal conv sees one frame ahead)
    assert diff[10] > 1e-3



def _disc_path(ys: list[float], xs: list[float], size: int = 32, radius: float = 4.0) -> torch.Tensor:
    """A textured bright disc on a dark background at the given centres: frames (1, L, 3, H, W)."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    out = []
    for cy, cx in zip(ys, xs, strict=True):
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        disc = torch.clamp(radius + 0.5 - d2.sqrt(), 0, 1)  # anti-aliased edge: sub-pixel motion is visible
        out.append((0.1 + 0.8 * disc).expand(3, size, size))
    return torch.stack(out)[None]


def test_lucas_kanade_measures_velocity_and_marks_a_bounce():
    from vssflow.plugins.encoders.layers import lucas_kanade_motion, luma

    # falls at 1 px/frame, bounces at frame 8, rises at 1 px/frame; drifts right at 0.5 px/frame throughout
    ys = [8.0 + i for i in range(9)] + [16.0 - i for i in range(1, 8)]
    xs = [10.0 + 0.5 * i for i in range(16)]
    x = _disc_path(ys, xs)
    mask = torch.ones(1, 16, dtype=torch.bool)
    stats = lucas_kanade_motion(luma(x), mask, grid=1)[0]  # (L, 4): vx, vy, ax, ay
    vx, vy, ay = stats[:, 0], stats[:, 1], stats[:, 3]
    assert stats[0].abs().max() == 0  # no previous frame, no motion
    assert torch.allclose(vx[1:], torch.full((15,), 0.5), atol=0.15), vx
    assert (vy[1:9] > 0.7).all() and (vy[9:] < -0.7).all(), vy  # image y grows downwards
    assert ay.abs().argmax() == 9 and ay[9] < -1.5  # the bounce: velocity flips between frames 8 and 9
    assert ay[2:8].abs().max() < 0.3 and ay[10:].abs().max() < 0.3
    padded = mask.clone()
    padded[0, 12:] = False
    cut = lucas_kanade_motion(luma(x), padded, grid=1)[0]
    assert torch.equal(cut[:12], stats[:12]) and cut[12:].abs().max() == 0  # padding adds no motion


def test_motion_encoder_with_flow_features_and_its_params():
    enc = create("encoder", "motion", size=32, dim=16, channels=[4, 8], temporal_layers=1, flow_grid=2).eval()
    ys = [8.0 + i for i in range(9)] + [16.0 - i for i in range(1, 8)]
    moving, still = _disc_path(ys, [16.0] * 16), _disc_path([8.0] * 16, [16.0] * 16)
    a, b = enc(moving).features, enc(still).features
    assert a.shape == (1, 16, 16) and torch.isfinite(a).all()
    assert (a - b).abs().amax() > 1e-2
    with pytest.raises(Exception, match="flow_window must be odd"):
        create("encoder", "motion", flow_grid=2, flow_window=4)


def _synthetic_face(size: int = 96):
    from vssflow.plugins.datasets.synth.mouth import render_face
    from vssflow.plugins.datasets.synth.speech import speakers

    rng = np.random.default_rng(0)
    faces, labels = render_face(rng, speakers()[0], np.full(3, 0.4), np.full(3, 0.5), 25.0, size)
    return torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255.0, labels["mouth_center"]  # (L, 3, H, W)


def _inside(box, point) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= point[0] <= x1 and y0 <= point[1] <= y1


def test_lip_centre_crop_contains_the_synthetic_mouth():
    from vssflow.plugins.encoders.lip import mouth_box

    faces, centre = _synthetic_face()
    enc = create("encoder", "lip")
    box = mouth_box(enc.face_box(faces), enc.mouth_fractions)
    assert _inside(box, centre)
    assert enc.mouths(faces[None]).shape == (1, 3, 1, enc.roi, enc.roi)


def test_lip_detect_finds_a_face_placed_anywhere_in_the_frame():
    from vssflow.plugins.encoders.lip import mouth_box

    faces, (cx, cy) = _synthetic_face(64)
    frame = torch.full((3, 3, 128, 128), 0.15)
    frame[:, :, 50:114, 8:72] = faces  # face in the lower left of a dark frame
    enc = create("encoder", "lip", size=128, crop="detect", detector="skin")
    face = enc.face_box(frame)
    assert _inside(face, (8 + cx, 50 + cy))
    assert _inside(mouth_box(face, enc.mouth_fractions), (8 + cx, 50 + cy))
    out = enc(frame[None])
    assert out.features.shape == (1, 3, enc.dim) and torch.isfinite(out.features).all()


def test_lip_haar_detector_when_opencv_ships_it():
    from vssflow.plugins.encoders.lip import haar_available

    if haar_available():
        enc = create("encoder", "lip", crop="detect", detector="haar")
        assert enc.contract.extra["detector"] == "HaarFaceDetector"
    else:
        with pytest.raises(PluginError, match="opencv-python-headless<5"):
            create("encoder", "lip", crop="detect", detector="haar")


# phoneme ---------------------------------------------------------------------------------------------------


def test_phoneme_vocab_defaults_to_the_tokenizer_inventory():
    from vssflow.core.phonemes import PhonemeTokenizer

    enc = create("encoder", "phoneme")
    assert enc.vocab_size == PhonemeTokenizer().vocab_size and enc.dim == 32 and enc.fps == 25.0
    with pytest.raises(ContractError, match=rf"expected ids in \[0, {enc.vocab_size}\)"):
        enc(torch.tensor([[enc.vocab_size]]), num_frames=4)


def test_phonemes_are_stretched_uniformly_over_the_span_with_silence_outside():
    enc = create("encoder", "phoneme", vocab_size=10, dim=4, fps=10.0)
    ids = torch.tensor([[5, 6, 7, 0]])  # one padding
    out = enc(ids, span=torch.tensor([[0.2, 0.8]]), num_frames=10)
    table, silence = enc.embed.weight, enc.silence
    # frame centres 0.05 ... 0.95 s: 0.25-0.75 lie in the span, two frames per phoneme
    expected = [silence] * 2 + [table[5]] * 2 + [table[6]] * 2 + [table[7]] * 2 + [silence] * 2
    assert torch.equal(out.features[0], torch.stack(expected))
    assert out.fps == 10.0 and out.mask.all()


def test_phonemes_placed_by_their_times_leave_gaps_silent():
    enc = create("encoder", "phoneme", vocab_size=10, dim=4, fps=10.0)
    ids = torch.tensor([[3, 4]])
    times = torch.tensor([[[0.0, 0.2], [0.4, 0.6]]])
    out = enc(ids, times=times, duration=0.8)
    rows = [enc.embed.weight[3]] * 2 + [enc.silence] * 2 + [enc.embed.weight[4]] * 2 + [enc.silence] * 2
    assert torch.equal(out.features[0], torch.stack(rows))


def test_phoneme_window_length_comes_from_params_extras_or_span():
    enc = create("encoder", "phoneme", vocab_size=10, dim=4, duration_s=4.0)
    ids = torch.tensor([[3, 4]])
    assert enc(ids).features.shape[1] == 100  # 4 s at 25 fps, stretched over the window
    free = create("encoder", "phoneme", vocab_size=10, dim=4)
    assert free(ids, span=torch.tensor([[0.0, 1.0]])).features.shape[1] == 26  # one silent frame after the span
    with pytest.raises(ContractError, match="cannot tell the window length"):
        free(ids)


# speaker and precomputed --------------------------------------------------------------------------------


def test_speaker_embedding_ignores_padding(speech):
    enc = create("encoder", "speaker", dim=32, channels=16, layers=2).eval()
    wav = speech[None, :16000]
    padded = torch.cat([wav, torch.randn(1, 8000)], dim=1)
    mask = torch.arange(24000)[None] < 16000
    a, b = enc(wav), enc(padded, mask)
    assert a.features.shape == (1, 1, 32) and a.fps is None
    assert torch.allclose(a.features, b.features, atol=1e-4)


def test_speaker_vector_input_checks_its_dim():
    enc = create("encoder", "speaker", input="vector")
    vec = torch.randn(3, 256)
    assert torch.equal(enc(vec).features, vec[:, None])
    with pytest.raises(ContractError, match="expected speaker vectors of dim 256, got dim 192"):
        enc(torch.randn(3, 192))


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_feature_files_round_trip(tmp_path, suffix):
    from vssflow.plugins.encoders.precomputed import read_feature_file, write_feature_file

    feats = torch.randn(30, 16)
    path = tmp_path / f"clip{suffix}"
    if suffix == ".npy":
        np.save(path, feats.numpy())
    else:
        write_feature_file(path, feats, fps=25.0)
    back, fps = read_feature_file(path)
    assert torch.equal(back, feats)
    assert fps == (None if suffix == ".npy" else 25.0)


def test_a_feature_file_with_the_wrong_dim_names_component_expected_and_actual(tmp_path):
    from vssflow.plugins.encoders.precomputed import read_feature_file, write_feature_file

    write_feature_file(tmp_path / "clip.safetensors", torch.randn(25, 512), fps=24.0)
    feats, fps = read_feature_file(tmp_path / "clip.safetensors")
    enc = create("encoder", "precomputed", dim=768, fps=24.0)
    with pytest.raises(ContractError, match=r"encoder 'precomputed': expected feature dim 768, got 512"):
        enc(feats[None], fps=fps)
    wrong_rate = create("encoder", "precomputed", dim=512, fps=25.0)
    with pytest.raises(ContractError, match="expected input at 25 fps, got 24 fps"):
        wrong_rate(feats[None], fps=fps)
    ok = create("encoder", "precomputed", dim=512, fps=24.0)(feats[None], fps=fps)
    assert torch.equal(ok.features[0], feats) and ok.fps == 24.0


def test_motion_statistics_are_computed_once_per_clip_and_never_served_stale():
    """The encoder's per-clip memo gives what the statistics give, computes a clip once, tells clips (and
    other masks of a clip) apart, and forgets the least recently used clip beyond its capacity."""
    from vssflow.plugins.encoders.layers import MotionStatsCache, lucas_kanade_motion, luma

    torch.manual_seed(0)
    y = luma(torch.rand(3, 8, 3, 16, 16))
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[2, 6:] = False
    cache = MotionStatsCache(capacity=4)
    first = cache(y, mask, 2, 5)
    for i in range(3):  # each row as computed alone
        assert torch.equal(first[i], lucas_kanade_motion(y[i : i + 1], mask[i : i + 1], 2, 5)[0])
    assert torch.allclose(first, lucas_kanade_motion(y, mask, 2, 5), atol=1e-5)
    assert (cache.misses, cache.hits) == (3, 0)
    again = cache(y[[1, 0]], mask[[1, 0]], 2, 5)
    assert torch.equal(again, first[[1, 0]]) and (cache.misses, cache.hits) == (3, 2)
    other = mask.clone()
    other[0, 5:] = False  # the same frames with another mask: another key
    assert not torch.equal(cache(y[:1], other[:1], 2, 5), first[:1]) and cache.misses == 4
    cache(y[:2] + 0.5, mask[:2], 2, 5)  # two new clips: the least recently used (row 2) goes
    assert len(cache.entries) == 4 and cache.misses == 6
    cache(y[2:], mask[2:], 2, 5)
    assert cache.misses == 7
    off = MotionStatsCache(capacity=0)  # flow_cache: 0 recomputes every time
    assert torch.equal(off(y, mask, 2, 5), lucas_kanade_motion(y, mask, 2, 5)) and not off.entries

    enc = create("encoder", "motion", size=16, dim=8, channels=[4], temporal_layers=1, flow_grid=2).eval()
    x = torch.rand(2, 8, 3, 16, 16)
    with torch.no_grad():
        a, b = enc(x).features, enc(x).features
    assert torch.equal(a, b) and enc.flow_stats.hits == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_luma_is_the_bt601_weighted_sum_to_the_bit(dtype):
    """The plane-wise form gives the bits of the channel-weighted sum (what the encoders and the motion cache's
    digests were built on), and pure primaries give the BT.601 weights."""
    from vssflow.plugins.encoders.layers import luma

    x = torch.rand(2, 5, 3, 12, 10, generator=torch.Generator().manual_seed(0)).to(dtype)
    reference = (x * x.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(dim=-3, keepdim=True)
    assert luma(x).shape == (2, 5, 1, 12, 10) and luma(x).dtype == dtype
    assert torch.equal(luma(x), reference)
    primaries = torch.eye(3, dtype=torch.float64)[:, :, None, None].expand(3, 3, 2, 2)  # red, green, blue frames
    assert luma(primaries)[:, 0, 0, 0].tolist() == pytest.approx([0.299, 0.587, 0.114], abs=1e-12)
