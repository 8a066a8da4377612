"""`t5-text` and `clap-text`: pretrained text towers (transformers) as caption encoders, from a LOCAL folder.

    caption --the folder's tokenizer--> ids (N,) --> T5 encoder: last hidden states (B, N, d_model), one token
    per text token; or CLAP's text tower: its projected sentence embedding (B, 1, projection_dim)
    (`output: pooled`, what AudioLDM conditions on) or its token states (B, N, hidden_size) (`output: tokens`)

`path` is a folder written by `save_pretrained` (config.json + model.safetensors + the tokenizer files), e.g.
a snapshot of google/flan-t5-base or laion/clap-htsat-unfused (CLAP: the whole model's folder; only the
text tower is loaded). Nothing is downloaded. Without `path` the model is randomly initialised from the
architecture params and reads ByT5's byte tokens (UTF-8 bytes + 3; 0 pad, 1 end), so it needs no files
(training from scratch, tests). Loaded models are frozen unless `frozen: false`.

Tokenizing happens in the data loader (the contract's `tokenize`), so captions reach the model as padded id
batches like every other condition. transformers is imported only when one of these encoders is built
(`pip install 'vssflow[text]'`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vssflow.core.errors import ContractError, PluginError
from vssflow.core.interfaces import Condition, Encoder, InputContract

from .layers import component_label

logger = logging.getLogger(__name__)

BYTE_OFFSET = 3  # ByT5: 0 pad, 1 </s>, 2 unk, then byte b is id b + 3
BYTE_VOCAB = 256 + BYTE_OFFSET
_WARNED: set[str] = set()


def warn_cut(what: str, tokens: int, max_length: int) -> None:
    """Log once per encoder that captions are being cut at its max_length."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    logger.warning("%s: a caption of %d tokens is cut to max_length %d (raise max_length in the recipe to keep "
                   "captions whole; further cuts are not reported)", what, tokens, max_length)


class TextTokenizer:
    """caption -> token ids (N,) long, at most `max_length`: a transformers tokenizer from a folder, or bytes."""

    def __init__(self, folder: str | None, max_length: int, label: str) -> None:
        self.folder, self.max_length, self.label = folder, int(max_length), label
        self._tokenizer: Any = None
        if folder is not None:
            self._load()
        self.pad_id = 0 if folder is None else int(self._tokenizer.pad_token_id or 0)

    def _load(self) -> None:
        from transformers import AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise PluginError(f"{self.label}: cannot load a tokenizer from {self.folder} ({exc})") from None

    def __getstate__(self) -> dict[str, Any]:  # data-loader workers reload the tokenizer from its folder
        return {**self.__dict__, "_tokenizer": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.folder is not None:
            self._load()

    def __call__(self, text: str) -> Tensor:
        """Token ids (N,) long, with the tokenizer's special tokens (bytes: an end token)."""
        text = text.strip()
        if self.folder is None:
            ids = [b + BYTE_OFFSET for b in text.encode("utf-8")] + [1]
        else:
            ids = list(self._tokenizer(text)["input_ids"])
        if len(ids) > self.max_length:
            warn_cut(self.label, len(ids), self.max_length)
            if self.folder is None:
                ids = ids[: self.max_length - 1] + [1]
            else:
                ids = list(self._tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])
        return torch.tensor(ids, dtype=torch.long)


class PretrainedTextEncoder(Encoder):
    """Shared part of the transformers text encoders: tokenizer contract, id checks, freezing."""

    modality = "caption"
    fps = None
    kind = "text"

    def __init__(self, path: str | None, max_length: int, frozen: bool | None) -> None:
        super().__init__()
        self.path, self.max_length = path, int(max_length)
        self.frozen = bool(path is not None if frozen is None else frozen)
        if path is not None and not (Path(path) / "config.json").is_file():
            raise PluginError(f"encoder {self.kind!r}: {Path(path) / 'config.json'} not found; `path` must be a local "
                              "folder written by save_pretrained (config.json, weights and tokenizer files)")
        self.tokenizer = TextTokenizer(path, self.max_length, f"encoder {self.kind!r}")

    def _freeze(self) -> None:
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """A frozen text model stays in eval mode (no dropout)."""
        return super().train(mode and not self.frozen)

    @property
    def contract(self) -> InputContract:
        """Token ids from `tokenize` (the folder's tokenizer, or ByT5 bytes), padded with 0 and masked."""
        return InputContract("caption", extra={"max_length": self.max_length, "tokenize": self.tokenizer,
                                               "vocab_size": self.vocab_size})

    @property
    def vocab_size(self) -> int:
        """Rows of the model's embedding table."""
        return int(self.model.config.vocab_size)

    def _ids(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        label = component_label(self)
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ContractError(f"{label}: expected caption token ids (B, N) of integers, got {x.dtype} {tuple(x.shape)}")
        if x.shape[1] > self.max_length:
            raise ContractError(f"{label}: caption of {x.shape[1]} tokens is longer than max_length {self.max_length}")
        if x.numel() and (int(x.max()) >= self.vocab_size or int(x.min()) < 0):
            raise ContractError(f"{label}: expected token ids in [0, {self.vocab_size}), got {int(x.max())}")
        valid = mask.to(device=x.device, dtype=torch.bool) if mask is not None else torch.ones_like(x, dtype=torch.bool)
        valid = valid.clone()
        valid[:, 0] |= ~valid.any(dim=1)  # a row without tokens attends to its first one (masked out below)
        ids = torch.where(valid, x.long(), torch.full_like(x.long(), self.tokenizer.pad_id))
        return ids, valid

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random ids of 10 tokens, the last sample padded after 6."""
        ids = torch.randint(BYTE_OFFSET, min(self.vocab_size, 200), (batch_size, 10), generator=generator)
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[-1, 6:] = False
        return {"x": ids.masked_fill(~mask, 0), "mask": mask}


class T5TextEncoder(PretrainedTextEncoder):
    """T5 encoder: caption tokens -> last hidden states (B, N, d_model), mask = valid tokens."""

    kind = "t5-text"

    def __init__(self, path: str | None = None, max_length: int = 128, frozen: bool | None = None,
                 d_model: int = 512, d_kv: int = 64, d_ff: int = 2048, num_layers: int = 6, num_heads: int = 8):
        super().__init__(path, max_length, frozen)
        from transformers import T5Config, T5EncoderModel

        arch = {"d_model": d_model, "d_kv": d_kv, "d_ff": d_ff, "num_layers": num_layers, "num_heads": num_heads}
        if path is not None:
            _defaults_only(self.kind, arch, {"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8})
            self.model = _load(T5EncoderModel, path, self.kind)
        else:
            self.model = T5EncoderModel(T5Config(vocab_size=BYTE_VOCAB, pad_token_id=0, eos_token_id=1,
                                                 decoder_start_token_id=0, **arch))
        self.dim = int(self.model.config.d_model)
        self._freeze()

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """ids (B, N) -> Condition (B, N, d_model), fps None."""
        ids, valid = self._ids(x, mask)
        h = self.model(input_ids=ids, attention_mask=valid.long()).last_hidden_state
        mask_out = valid & (mask.to(valid.device).bool() if mask is not None else valid)
        return Condition(h * mask_out[..., None], mask_out, None)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, N, d_model)."""
        return {"features": (*inputs["x"].shape, self.dim)}


class ClapTextEncoder(PretrainedTextEncoder):
    """CLAP's text tower: the projected sentence embedding (B, 1, projection_dim), or token states."""

    kind = "clap-text"

    def __init__(self, path: str | None = None, max_length: int = 77, frozen: bool | None = None,
                 output: str = "pooled", hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072, projection_dim: int = 512):
        super().__init__(path, max_length, frozen)
        from transformers import ClapTextConfig, ClapTextModelWithProjection

        if output not in ("pooled", "tokens"):
            raise PluginError(f"encoder 'clap-text': output must be pooled or tokens, got {output!r}")
        self.output = output
        arch = {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                "projection_dim": projection_dim}
        if path is not None:
            _defaults_only(self.kind, arch, {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                             "intermediate_size": 3072, "projection_dim": 512})
            self.model = _load(ClapTextModelWithProjection, path, self.kind)
        else:
            self.model = ClapTextModelWithProjection(ClapTextConfig(
                vocab_size=BYTE_VOCAB, pad_token_id=0, max_position_embeddings=max_length + 4, **arch))
        config = self.model.config
        self.dim = int(config.projection_dim if output == "pooled" else config.hidden_size)
        self._freeze()

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """ids (B, N) -> Condition (B, 1, projection_dim) (pooled) or (B, N, hidden_size) (tokens)."""
        ids, valid = self._ids(x, mask)
        out = self.model(input_ids=ids, attention_mask=valid.long())
        if self.output == "pooled":
            return Condition(out.text_embeds[:, None], None, None)
        mask_out = valid & (mask.to(valid.device).bool() if mask is not None else valid)
        return Condition(out.last_hidden_state * mask_out[..., None], mask_out, None)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, 1, projection_dim) or (B, N, hidden_size)."""
        b, n = inputs["x"].shape
        return {"features": (b, 1, self.dim) if self.output == "pooled" else (b, n, self.dim)}


def _defaults_only(kind: str, asked: dict[str, Any], defaults: dict[str, Any]) -> None:
    changed = sorted(k for k, v in asked.items() if v != defaults[k])
    if changed:
        raise ContractError(f"encoder {kind!r}: {', '.join(changed)} describe a random model; with `path` the "
                            "folder's config.json defines the architecture (drop them)")


def _load(cls: Any, path: str, kind: str) -> Any:
    try:
        return cls.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PluginError(f"encoder {kind!r}: cannot load {path} ({exc})") from None


def write_tiny_text_model(kind: str, path: str | Path, words: tuple[str, ...] = ()) -> Path:
    """A tiny random T5 encoder (kind "t5-text") or CLAP model ("clap-text") with a word-level tokenizer,
    saved with save_pretrained under `path`: what a downloaded folder looks like, for tests and examples."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    specials = ["<pad>", "</s>", "<unk>"] if kind == "t5-text" else ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    base = ("a", "one", "two", "three", "on", "screen", "off-screen", "hits", "and", "no", "sounds", "metal",
            "wood", "glass", "drum", "engine", "square", "squares", "circle", "circles", "triangle", "triangles",
            "car", "cars", "music", "speech", "person", "speaking", ";", ",")
    for word in (*base, *words):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation("isolated")])
    torch.manual_seed(0)
    if kind == "t5-text":
        from tokenizers import processors
        from transformers import T5Config, T5EncoderModel

        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                            unk_token="<unk>")
        model = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                        num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    elif kind == "clap-text":
        from tokenizers import processors
        from transformers import ClapTextConfig, ClapTextModelWithProjection

        backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                               special_tokens=[("<s>", 0), ("</s>", 2)])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>",
                                            eos_token="</s>", unk_token="<unk>")
        model = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            projection_dim=8, max_position_embeddings=80, pad_token_id=1))
    else:
        raise ValueError(f"no tiny text model of kind {kind!r}")
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path
