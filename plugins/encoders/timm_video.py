"""`timm-video`: any timm image model as a per-frame video encoder (the paper's CLIP ViT-B/16 is a preset).

Frames (B, L, 3, H, W) in [0, 1] are normalised with the model's mean/std (its pretrained_cfg unless given),
run through the model frame by frame (in chunks, to bound memory) and pooled:
  cls     the class token after the final norm: (B, L, D), fps kept. CLIP's "before the projection" feature.
  mean    mean of the patch tokens (or of a CNN's feature map) after the model's own head norm: (B, L, D).
  tokens  every patch token: (B, L * N, D), time order kept but fps None (tokens, not a frame grid).
Weights: random, a local file (`checkpoint_path`: safetensors, or a timm/PyTorch checkpoint loaded with
weights_only=True, passed through the model's own timm checkpoint filter, so OpenAI/open_clip layouts and
other image sizes load too), or the hub when `pretrained: true` is asked for explicitly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.errors import PluginError
from vssflow.core.interfaces import Condition

from .video import VideoEncoder, as_size

# OpenAI's CLIP ViT-B/16 with its native QuickGELU (the plain clip_224 variant would use GELU on these weights)
CLIP_VIT_B16 = "vit_base_patch16_clip_quickgelu_224.openai"


def _create(name: str, size: tuple[int, int] | None, kwargs: dict[str, Any], pretrained: bool) -> nn.Module:
    import timm

    if not timm.is_model(name.split(".")[0]):
        from vssflow.registry.messages import close_matches

        hint = close_matches(name, timm.list_models()) or " (see timm.list_models())"
        raise PluginError(f"timm has no model named {name!r}{hint}")
    kwargs = dict(kwargs, num_classes=0)
    if size is not None:
        try:
            return timm.create_model(name, pretrained=pretrained, img_size=size, **kwargs)
        except TypeError:
            pass  # CNNs take any image size and have no img_size argument
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def load_timm_checkpoint(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a local checkpoint into a timm model strictly (the classifier head, if any, is dropped)."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise PluginError(f"timm-video {name!r}: checkpoint_path {path} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)  # safetensors, or torch.load with weights_only
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise PluginError(f"timm-video {name!r}: cannot read {path} ({type(exc).__name__}: {exc})") from None
    # the model's own timm filter converts foreign layouts (OpenAI CLIP, open_clip) and resamples
    # position embeddings to this image size
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or "head"
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if k in own or not k.startswith(classifiers)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected else
            f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model {tuple(own[wrong[0]].shape)}"
        )
        raise PluginError(f"timm-video {name!r}: {path} does not fit the model ({detail})")
    model.load_state_dict(state, strict=True)


class TimmVideoEncoder(VideoEncoder):
    """Any timm image model applied per frame; frozen (cached features) or trainable."""

    def __init__(
        self,
        model: str = CLIP_VIT_B16,
        fps: float = 10.0,
        size: int | tuple[int, int] | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        pooling: str = "cls",
        frozen: bool = True,
        checkpoint_path: str | None = None,
        pretrained: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        chunk: int = 256,
    ):
        super().__init__()
        if pooling not in ("cls", "mean", "tokens"):
            raise PluginError(f"timm-video: pooling must be cls, mean or tokens, got {pooling!r}")
        want = as_size(size) if size is not None else None
        try:
            net = _create(model, want, dict(model_kwargs or {}), pretrained and checkpoint_path is None)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - hub download failures, bad kwargs
            where = "download its weights" if pretrained and checkpoint_path is None else "build it"
            raise PluginError(
                f"timm-video: cannot {where} for {model!r} ({type(exc).__name__}: {exc}); "
                "without internet, pass checkpoint_path to a local weights file"
            ) from None
        if checkpoint_path is not None:
            load_timm_checkpoint(net, checkpoint_path, model)
        cfg = net.pretrained_cfg
        self.prefix_tokens = int(getattr(net, "num_prefix_tokens", 0) or 0)
        if pooling == "cls":
            if self.prefix_tokens == 0:
                raise PluginError(f"timm-video: {model!r} has no class token; use pooling: mean or tokens")
            net.reset_classifier(0, global_pool="token")
        elif pooling == "mean":
            net.reset_classifier(0, global_pool="avg")
        self.model_name, self.pooling, self.chunk = model, pooling, int(chunk)
        self.net = net
        self.dim = int(net.num_features)
        self._setup_video(
            fps,
            want or tuple(cfg.get("input_size", (3, 224, 224))[1:]),
            mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406)),
            std if std is not None else cfg.get("std", (0.229, 0.224, 0.225)),
        )
        if pooling == "tokens":
            self.fps = None  # a token sequence, not a frame grid
        self.frozen = bool(frozen)
        if self.frozen:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> TimmVideoEncoder:
        """Frozen models stay in eval mode (no dropout, fixed norms) whatever the trainer asks."""
        super().train(mode)
        if self.frozen:
            self.net.eval()
        return self

    def _contract_extra(self) -> dict[str, Any]:
        return {"model": self.model_name, "pooling": self.pooling}

    def _frames(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) normalised -> (N, D) pooled or (N, T, D) tokens."""
        feats = self.net.forward_features(frames)
        if self.pooling != "tokens":
            return self.net.forward_head(feats, pre_logits=True)  # (N, D)
        if feats.dim() == 4:  # CNN feature map (N, D, h, w)
            return feats.flatten(2).transpose(1, 2)
        tokens = feats[:, self.prefix_tokens :]  # (N, T, D)
        fc_norm = getattr(self.net, "fc_norm", None)
        return fc_norm(tokens) if isinstance(fc_norm, nn.Module) else tokens

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """frames (B, L, 3, H, W) -> Condition (B, L, D) at fps, or (B, L*T, D) tokens."""
        self.check_frames(x, extras)
        b, length = x.shape[:2]
        mask = self.output_mask(x, mask)
        frames = self.normalise(x.flatten(0, 1))  # (B*L, 3, H, W)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = torch.cat([self._frames(c) for c in frames.split(self.chunk)], dim=0)
        if out.dim() == 2:
            return Condition(out.view(b, length, -1), mask, self.fps)
        tokens = out.shape[1]
        mask = mask[:, :, None].expand(b, length, tokens).reshape(b, length * tokens)
        return Condition(out.reshape(b, length * tokens, -1), mask, None)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, L, D), or (B, L * tokens, D) for token pooling."""
        b, length = inputs["x"].shape[:2]
        if self.pooling != "tokens":
            return {"features": (b, length, self.dim)}
        patches = getattr(getattr(self.net, "patch_embed", None), "num_patches", None)
        return {"features": (b, length * patches, self.dim)} if patches else {}
