"""`precomputed`: features extracted elsewhere (CLIP, Synchformer, AV-HuBERT, RawNet3, ...) given as input.

Files: `.npy` (L, D) or `.safetensors` with one tensor (or one named `features`) and optional metadata
`fps` (string, as safetensors metadata must be). `read_feature_file` reads both; `write_feature_file` writes
the safetensors form, so features extracted with any library carry their frame rate with them.
The encoder checks dim (always) and fps (when the input says it) against its params and raises a
ContractError naming itself, the expected and the actual value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.errors import ContractError, MediaError
from vssflow.core.interfaces import Condition, Encoder, InputContract

from .layers import check_fps, component_label


def read_feature_file(path: str | Path, key: str | None = None) -> tuple[Tensor, float | None]:
    """Features (L, D) float32 and their fps (None when the file does not say) from .npy or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: feature file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise MediaError(f"{path}: not a readable .npy feature file ({exc})") from None
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), None
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                name = key or ("features" if "features" in names else names[0] if len(names) == 1 else None)
                if name is None or name not in names:
                    raise MediaError(f"{path}: expected one tensor or one named 'features', found {names}")
                fps = (f.metadata() or {}).get("fps")
                return f.get_tensor(name).float(), float(fps) if fps is not None else None
        except (SafetensorError, OSError) as exc:
            raise MediaError(f"{path}: not a readable safetensors feature file ({exc})") from None
    raise MediaError(f"{path}: unknown feature file type {suffix!r}; use .npy or .safetensors")


def write_feature_file(path: str | Path, features: Tensor, fps: float | None = None) -> Path:
    """Write features (L, D) to `path`.safetensors with their fps in the metadata (atomically)."""
    from safetensors.torch import save_file

    from vssflow.core.media import atomic_path

    path = Path(path)
    metadata = {"fps": repr(float(fps))} if fps is not None else None
    with atomic_path(path) as tmp:
        save_file({"features": features.detach().float().contiguous().cpu()}, str(tmp), metadata=metadata)
    return path


class PrecomputedEncoder(Encoder):
    """Passes precomputed features (B, L, dim) through after checking dim and fps; optional LayerNorm."""

    modality = "features"

    def __init__(self, dim: int, fps: float | None = None, layer_norm: bool = False):
        super().__init__()
        self.dim = int(dim)
        self.fps = float(fps) if fps is not None else None
        self.norm = nn.LayerNorm(self.dim) if layer_norm else nn.Identity()
        self.frozen = not layer_norm

    @property
    def contract(self) -> InputContract:
        """Features (L, dim) at `fps` (None: a token sequence)."""
        return InputContract("features", fps=self.fps, dim=self.dim)

    def check(self, x: Tensor, fps: float | None = None) -> None:
        """ContractError unless x is (B, L, dim) and, when given, fps matches."""
        label = component_label(self)
        if x.dim() != 3:
            raise ContractError(f"{label}: expected features (B, L, D), got shape {tuple(x.shape)}")
        if x.shape[-1] != self.dim:
            raise ContractError(
                f"{label}: expected feature dim {self.dim}, got {x.shape[-1]} "
                f"(set params.dim: {x.shape[-1]} if these are the features you meant)"
            )
        check_fps(self, self.fps, fps)

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """features (B, L, dim) -> Condition (B, L, dim) at `fps`."""
        self.check(x, extras.get("fps"))
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return Condition(self.norm(x.float()), mask.to(torch.bool), self.fps)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random features, seven frames, the last sample two shorter."""
        mask = torch.ones(batch_size, 7, dtype=torch.bool)
        mask[-1, -2:] = False
        return {"x": torch.randn(batch_size, 7, self.dim, generator=generator), "mask": mask}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Same shape as the input."""
        return {"features": tuple(inputs["x"].shape)}
