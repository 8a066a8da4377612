"""Pretrained text towers as caption encoders: tiny random T5 and CLAP models written with save_pretrained
(what a downloaded folder holds) load from that folder, tokenize in the data loader, and train and guide
through cross-attention or the global route like the byte encoder."""

from __future__ import annotations

import logging

import pytest
import torch

from vssflow.core.errors import ContractError, PluginError
from vssflow.registry import create


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from vssflow.plugins.encoders.text_models import write_tiny_text_model

    root = tmp_path_factory.mktemp("text-models")
    return {kind: write_tiny_text_model(kind, root / kind) for kind in ("t5-text", "clap-text")}


def test_t5_loads_its_folder_and_matches_transformers(folders):
    from transformers import AutoTokenizer, T5EncoderModel

    enc = create("encoder", "t5-text", path=str(folders["t5-text"]))
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters()) and enc.dim == 16
    ids = enc.contract.extra["tokenize"]("two glass triangles on screen")
    want = AutoTokenizer.from_pretrained(folders["t5-text"])("two glass triangles on screen")["input_ids"]
    assert ids.tolist() == want and ids[-1] == 1  # the folder's own tokenizer, with its end token
    cond = enc(ids[None], torch.ones(1, len(ids), dtype=torch.bool))
    ref = T5EncoderModel.from_pretrained(folders["t5-text"]).eval()(input_ids=ids[None]).last_hidden_state
    assert cond.fps is None and torch.allclose(cond.features, ref, atol=1e-6)


def test_padding_does_not_change_a_captions_features(folders):
    for kind, params in (("t5-text", {}), ("clap-text", {"output": "pooled"}), ("clap-text", {"output": "tokens"})):
        enc = create("encoder", kind, path=str(folders[kind]), **params)
        ids = enc.contract.extra["tokenize"]("one metal square on screen")
        alone = enc(ids[None], torch.ones(1, len(ids), dtype=torch.bool)).features
        padded = torch.cat([ids, torch.zeros(5, dtype=torch.long)])[None]
        mask = torch.arange(len(padded[0]))[None] < len(ids)
        feats = enc(padded, mask).features
        assert torch.allclose(feats[:, : alone.shape[1]], alone, atol=1e-5), kind
        if params.get("output") == "pooled":
            assert feats.shape == (1, 1, 8)


def test_clap_loads_only_the_text_tower_of_a_whole_clap_folder(tmp_path):
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    from vssflow.plugins.encoders.text_models import write_tiny_text_model

    tok_folder = write_tiny_text_model("clap-text", tmp_path / "tok")
    text = ClapTextConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=80, pad_token_id=1)
    audio = ClapAudioConfig(depths=[1, 1], num_attention_heads=[1, 1], hidden_size=16, patch_embeds_hidden_size=8,
                            spec_size=64, window_size=4, num_mel_bins=16, enable_fusion=False)
    whole = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8))
    whole.eval().save_pretrained(tmp_path / "clap")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok_folder / name).exists():
            (tmp_path / "clap" / name).write_bytes((tok_folder / name).read_bytes())
    enc = create("encoder", "clap-text", path=str(tmp_path / "clap"))
    ids = enc.contract.extra["tokenize"]("glass hits")
    got = enc(ids[None]).features[:, 0]
    want = whole.get_text_features(input_ids=ids[None])
    want = getattr(want, "pooler_output", want)  # CLAP's text features: the projection, L2-normalised
    assert torch.allclose(torch.nn.functional.normalize(got, dim=-1), want, atol=1e-5)


def test_bad_folders_and_params_fail_in_one_line(tmp_path, folders):
    with pytest.raises(PluginError, match=r"t5-text'?.*config.json not found"):
        create("encoder", "t5-text", path=str(tmp_path / "missing"))
    with pytest.raises((ContractError, PluginError), match=r"d_model describe a random model"):
        create("encoder", "t5-text", path=str(folders["t5-text"]), d_model=32)


def test_long_captions_are_cut_with_one_warning(folders, caplog):
    from vssflow.core import data
    from vssflow.plugins.encoders import text_models

    data._CUT_WARNED.clear()
    text_models._WARNED.clear()
    long = "two glass triangles on screen and " * 20
    with caplog.at_level(logging.WARNING):
        assert len(data.caption_ids(long, 128)) == 128
        assert len(data.caption_ids(long + "x", 128)) == 128
        enc = create("encoder", "t5-text", path=str(folders["t5-text"]), max_length=16)
        ids = enc.contract.extra["tokenize"](long)
        enc.contract.extra["tokenize"](long)
    assert len(ids) == 16 and ids[-1] == 1  # still ends with the end token
    cuts = [r.getMessage() for r in caplog.records if "cut to" in r.getMessage()]
    assert len(cuts) == 2, cuts
    assert "max_length 128" in cuts[0] and "max_length 16" in cuts[1]


@pytest.mark.parametrize("kind, aggregator", [("t5-text", "cross-attn"), ("clap-text", "global")])
def test_a_caption_recipe_trains_and_guides_with_a_pretrained_text_encoder(synth_root, folders, kind, aggregator):
    from vssflow.plugins.datasets.synth.dataset import SyntheticAVDataset
    from vssflow.registry.assemble import build

    parts = build("v2s-tiny-caption", overrides=[
        "audio.duration_s=1.0", f"conditions.caption.encoder.name={kind}",
        f"conditions.caption.encoder.params={{path: {folders[kind]}}}",
        f"conditions.caption.aggregator.name={aggregator}", "conditions.caption.aggregator.params={}",
    ])
    model = parts.model
    contracts = {name: enc.contract for name, enc in model.encoders.items()}
    ds = SyntheticAVDataset(synth_root, clips=8, seconds=1.0, families=("v2s",), size=48, split="all",
                            conditions=contracts, spec=model.spec)
    batch = ds.collate([ds[0], ds[1]])
    assert batch["conditions"]["caption"]["x"].dtype == torch.long
    model.train()
    loss = model.loss(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in model.aggregators["caption"].named_parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():  # a fresh DiT's output layer is zero (adaLN-zero): give it an output to steer
        gen = torch.Generator().manual_seed(0)
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    conds = {k: v for k, v in batch["conditions"].items()}
    tokenize = contracts["caption"].extra["tokenize"]
    neg_ids = tokenize("glass hits")[None].repeat(2, 1)
    negative = {"caption": {"x": neg_ids, "mask": torch.ones_like(neg_ids, dtype=torch.bool),
                            "present": torch.ones(2, dtype=torch.bool)}}
    plain = model.generate(conds, steps=2, guidance=3.0, seeds=[0, 1], decode=False).latent
    steered = model.generate(conds, steps=2, guidance=3.0, seeds=[0, 1], decode=False, negative=negative).latent
    assert not torch.allclose(plain, steered)
