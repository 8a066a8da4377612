"""LoRA through the peft library: `peft.inject_adapter_in_model` wraps the matched nn.Linear / Conv layers of
a built FlowModel in place, so the model keeps its own forward (the DiT's fused kernels included).

Why this works with the fused paths: every projection of the DiT is an nn.Linear that is *called*
(`self.qkv(x)`, `self.fc1(x)`); the Triton kernels (core/kernels) take the projected activations, the
adaLN shift/scale/gate tensors and the QK-norm scales, never a Linear's `.weight`. So peft's wrapped layer
adds its low-rank term before any fused kernel runs. (A layer read through `.weight` by a kernel would
silently bypass the adapter; none is, and tests compare merged against unmerged generation.)

Parameter names: peft stores `<module>.lora_A.<slot>.weight` beside `<module>.base_layer.weight`; an
adapter file holds `<module>.lora_A.weight` (peft's own file convention: slot-free).
"""

from __future__ import annotations

import fnmatch
import logging
import warnings

import torch
from torch import nn

from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Adapter

from .params import DEFAULT_TARGETS

ADAPTER_LAYERS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
WRAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
log = logging.getLogger("vssflow.adapters")


def _peft():
    try:
        import peft
    except ImportError as exc:
        raise ContractError(
            "adapter 'lora' needs the peft package: pip install 'vssflow[finetune]'"
        ) from exc
    return peft


def _is_adapter_layer(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


class LoraAdapter(Adapter):
    """LoRA on the modules whose names match `targets` (glob patterns); see plugins/adapters/__init__.py."""

    name = "lora"

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets: list[str] | None = None,
                 rslora: bool = False):
        self.rank, self.alpha, self.dropout, self.rslora = rank, alpha, dropout, rslora
        self.targets = list(targets or DEFAULT_TARGETS)

    def resolve(self, model: nn.Module) -> list[str]:
        """The names of the modules the patterns select that peft can wrap (Linear, Conv1d/2d, Embedding);
        other matched layers (normalisation, activations) are left as they are, frozen; none at all is an error."""
        chosen, unwrappable = [], []
        wrapped = [name for name, module in model.named_modules() if _is_adapter_layer(module)]
        for name, module in model.named_modules():
            if not name or not any(fnmatch.fnmatchcase(name, p) for p in self.targets):
                continue
            if any(name.startswith(w + ".") for w in wrapped):  # inside a layer adapted before (another slot)
                continue
            if _is_adapter_layer(module) or type(module) in WRAPPABLE:  # peft adds a slot to an adapted layer
                chosen.append(name)
            elif not list(module.children()) and any(True for _ in module.parameters(recurse=False)):
                unwrappable.append(f"{name} ({type(module).__name__})")
        if not chosen:
            raise ContractError(
                f"adapter 'lora': targets {self.targets} match no Linear, Conv1d, Conv2d or Embedding module of this "
                "model; name modules as in `model.named_modules()`, e.g. backbone.blocks.*.attn.*"
            )
        if unwrappable:
            log.info("adapter lora: %d matched module(s) with weights are not Linear/Conv/Embedding and stay as they "
                     "are (frozen), e.g. %s", len(unwrappable), unwrappable[0])
        return chosen

    def attach(self, model: nn.Module, slot: str) -> list[str]:
        """Inject LoRA layers under `slot` (B zero, so the model's output is unchanged at first)."""
        peft = _peft()
        names = self.resolve(model)
        config = peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                                 target_modules=names, use_rslora=self.rslora, bias="none")
        try:
            with warnings.catch_warnings():  # a second slot: peft warns that the model will hold several adapters
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                peft.inject_adapter_in_model(config, model, adapter_name=slot)
        except ValueError as exc:  # peft's refusals (a layer type it cannot wrap, ...) in one line
            raise ContractError(f"adapter 'lora': peft cannot wrap the targets: {' '.join(str(exc).split())}") from None
        for name, param in model.named_parameters():  # this slot trains; everything else is frozen
            param.requires_grad_(self.file_key(name, slot) is not None)
        self._activate(model)
        return names

    @staticmethod
    def _activate(model: nn.Module) -> None:
        """Every slot of every adapted layer contributes (peft's forward sums the active ones)."""
        for module in model.modules():
            if _is_adapter_layer(module):
                slots = sorted({k for layer in ("lora_A", "lora_embedding_A") for k in getattr(module, layer, {})})
                module._active_adapter = slots

    def file_key(self, param_name: str, slot: str) -> str | None:  # noqa: D102 - see Adapter
        parts = param_name.split(".")
        for i in range(1, len(parts)):
            if parts[i - 1] in ADAPTER_LAYERS:
                return ".".join(parts[:i] + parts[i + 1:]) if parts[i] == slot else None
        return None

    def param_name(self, file_key: str, slot: str) -> str:  # noqa: D102 - see Adapter
        parts = file_key.split(".")
        for i, part in enumerate(parts):
            if part in ADAPTER_LAYERS:
                return ".".join(parts[: i + 1] + [slot] + parts[i + 1:])
        raise ContractError(f"adapter 'lora': {file_key!r} is not a LoRA tensor name (no lora_A / lora_B)")

    def set_scale(self, model: nn.Module, slot: str, scale: float) -> None:  # noqa: D102 - see Adapter
        for module in model.modules():
            if _is_adapter_layer(module) and hasattr(module, "set_scale"):
                module.set_scale(slot, scale)

    @torch.no_grad()
    def merge(self, model: nn.Module) -> None:  # noqa: D102 - see Adapter
        wrapped = [(name, module) for name, module in model.named_modules() if _is_adapter_layer(module)]
        for name, module in wrapped:
            module.merge(adapter_names=list(module.active_adapters))
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
