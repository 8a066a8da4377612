"""Helpers shared by the judges: batching clips of any length, freezing, loading local weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vssflow.core.errors import PluginError
from vssflow.core.interfaces import Judge


def pad_batch(wavs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Mono clips of any lengths -> zero-padded (B, S) and lengths (B,)."""
    lengths = torch.tensor([int(w.shape[-1]) for w in wavs])
    out = torch.zeros(len(wavs), int(lengths.max()) if len(wavs) else 0)
    for i, w in enumerate(wavs):
        out[i, : w.shape[-1]] = w.detach().float().cpu()
    return out, lengths


def clips(wav: Tensor, lengths: Tensor | None) -> list[Tensor]:
    """(B, S) and valid lengths -> list of 1-D valid parts."""
    if lengths is None:
        return list(wav)
    return [wav[b, : int(lengths[b])] for b in range(wav.shape[0])]


@torch.no_grad()
def run_all(judge, wavs: list[Tensor], batch_size: int = 16, method: str = "embed") -> Tensor:
    """`judge.<method>` over a list of clips in batches -> (N, D) float32 on the CPU."""
    rows = []
    for i in range(0, len(wavs), batch_size):
        wav, lengths = pad_batch(wavs[i : i + batch_size])
        rows.append(getattr(judge, method)(wav, lengths).float().cpu())
    if not rows:
        raise ValueError("no clips to score")
    return torch.cat(rows)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: judges are measuring instruments."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_state(path: str | Path, what: str) -> dict[str, Tensor]:
    """Tensors of a local checkpoint: .safetensors, or .pt/.pth read with torch.load(weights_only=True).

    A .pth holding {"model": state_dict} (the PANNs release format) is unwrapped. Nothing is unpickled
    beyond tensors and plain containers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PluginError(f"{what}: no checkpoint file at {path}; give the path of a local .safetensors or .pth")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal becomes one line
        raise PluginError(f"{what}: {path} is not a plain tensor checkpoint ({type(exc).__name__}); "
                          "convert it to .safetensors") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise PluginError(f"{what}: {path} holds a {type(obj).__name__}, expected a state dict")
    return obj


def load_strict(module: nn.Module, state: dict[str, Tensor], what: str, ignore: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`; missing, unexpected or mis-shaped keys end in one line naming them."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
        if shapes:
            k = shapes[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, model wants {tuple(own[k].shape)}")
        raise PluginError(f"{what}: checkpoint does not match the architecture: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


class DoubleConvBlock(nn.Module):
    """Two [3x3 conv (no bias), batch norm, ReLU] then a 2-D pool (the PANNs / DCASE block; parameter names
    conv1, conv2, bn1, bn2 as in the released checkpoints)."""

    def __init__(self, cin: int, cout: int, pool: str = "avg"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.pool = torch.nn.functional.max_pool2d if pool == "max" else torch.nn.functional.avg_pool2d

    def forward(self, x: Tensor, pool: int) -> Tensor:  # noqa: D102
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.pool(x, pool) if pool > 1 else x


class LazyJudge(Judge):
    """A judge whose weights load on first use: building one (listing, validating params, a metric that may
    never run) reads no file. `state_dict`, `weights_hash`, `labels`, `embed` and `classify` load first."""

    _labels: tuple[str, ...] = ()

    def _load(self) -> nn.Module:
        raise NotImplementedError

    def state_dict(self, *args, **kwargs):  # noqa: D102
        self._load()
        return super().state_dict(*args, **kwargs)

    @property
    def labels(self) -> tuple[str, ...]:  # noqa: D102
        self._load()
        return self._labels
