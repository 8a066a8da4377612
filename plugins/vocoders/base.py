"""Shared pieces of the built-in vocoders: the mel contract, input checks, a local-folder weights format.

Folder format (what `hifigan` and `vocos` load from `path`, and what `save_pretrained` writes):
    config.json         the constructor arguments (for hifigan: the transformers SpeechT5HifiGanConfig keys)
    model.safetensors   the weights (diffusion_pytorch_model.safetensors is accepted too)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.errors import ContractError, PluginError
from vssflow.core.interfaces import Vocoder

WEIGHT_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors")


def label(vocoder: Any) -> str:
    """`vocoder 'hifigan'` when built through the registry, else the class name."""
    info = getattr(vocoder, "vssflow_component", None)
    return f"vocoder {info.name!r}" if info is not None else f"vocoder {type(vocoder).__name__}"


def check_mel_input(vocoder: Vocoder, mel: Tensor) -> None:
    """ContractError unless mel is (B, n_mels, F)."""
    if mel.dim() != 3 or mel.shape[1] != vocoder.mel.n_mels:
        raise ContractError(
            f"{label(vocoder)}: expected a mel (B, {vocoder.mel.n_mels}, F), got shape {tuple(mel.shape)}"
        )


def read_folder(path: str | Path, what: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config, weights) from a local vocoder folder; PluginError naming the folder when incomplete."""
    from safetensors.torch import load_file

    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise PluginError(f"{what}: {config_file} not found; `path` must be a local folder with config.json and "
                          "model.safetensors")
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise PluginError(f"{what}: no {' or '.join(WEIGHT_FILES)} in {folder}")
    try:
        config = json.loads(config_file.read_text())
        state = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise PluginError(f"{what}: cannot read {folder} ({type(exc).__name__}: {exc})") from None
    return config, state


def write_folder(path: str | Path, config: dict[str, Any], state: dict[str, Tensor]) -> Path:
    """Write config.json + model.safetensors into `path` (each file atomically)."""
    from safetensors.torch import save_file

    from vssflow.core.media import atomic_path

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def _listify(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    return value


def architecture_from_config(what: str, path: str | Path, config: dict[str, Any], params: dict[str, Any],
                             defaults: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for a vocoder loaded from a folder: each key of `defaults` takes the folder's
    config.json value; a param the caller changed from its default must agree with it (ContractError naming
    `what`); keys the config lacks take the caller's value."""
    args: dict[str, Any] = {}
    for key, default in defaults.items():
        asked = _listify(params.get(key, default))
        if key not in config:
            args[key] = asked
            continue
        if asked != _listify(default) and asked != _listify(config[key]):
            raise ContractError(
                f"{what}: params ask for {key}={asked}, {path}/config.json has {key}={config[key]} "
                "(drop the architecture params when loading from a folder)"
            )
        args[key] = config[key]
    return args


def load_strict(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict(strict=True) with one PluginError naming the first mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected else
            f"{wrong[0]} is {tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} in the model"
        )
        raise PluginError(f"{source}: weights do not fit the model ({detail})")
    module.load_state_dict(state, strict=True)


def fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace weight-norm pairs (weight_g/weight_v, or parametrizations.weight.original0/1) by plain weights."""
    out = dict(state)
    pairs = []
    for key in state:
        if key.endswith(".weight_g"):
            pairs.append((key[: -len(".weight_g")], key, key[:-1] + "v"))
        elif key.endswith(".parametrizations.weight.original0"):
            base = key[: -len(".parametrizations.weight.original0")]
            pairs.append((base, key, base + ".parametrizations.weight.original1"))
    for base, g_key, v_key in pairs:
        g, v = out.pop(g_key), out.pop(v_key)
        # g keeps size 1 on every dim the norm was taken over
        dims = [d for d in range(v.dim()) if g.dim() != v.dim() or g.shape[d] == 1]
        out[base + ".weight"] = g * v / torch.linalg.vector_norm(v, dim=dims, keepdim=True).clamp_min(1e-12)
    return out
