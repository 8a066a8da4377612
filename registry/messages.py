"""One-line error messages: close matches for a mistyped word, and a pydantic ValidationError as
`dotted.key: what is wrong (did you mean ...?)`. Used by the catalog and the recipe loader alike."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError


def close_matches(word: str, options: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the nearest options, or ''."""
    found = difflib.get_close_matches(word, list(options), n=2, cutoff=0.55)
    if not found:
        return ""
    return " (did you mean " + " or ".join(found) + "?)"


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional to the model, dict or list type underneath."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at `loc` (the location of a key) inside `model`, or [] if not a model there."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (dict, list, tuple):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _dotted(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc)


def describe_validation_error(
    err: ValidationError, model: type[BaseModel], prefix: str = "", subject: str = ""
) -> str:
    """One line for the first error of a pydantic ValidationError, with close matches for unknown keys."""
    errors = err.errors()
    first = errors[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = prefix + _dotted(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = close_matches(str(loc[-1]), allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
        msg = f"{key}: unknown key{hint}"
    elif kind == "missing":
        msg = f"{key}: missing required key"
    else:
        got = first.get("input")
        text = first["msg"]
        if kind == "literal_error" and isinstance(got, str):
            options = [o.strip(" '") for o in text.split("Input should be ", 1)[-1].replace(" or ", ",").split(",")]
            text += close_matches(got, options)
        msg = f"{key}: {text} (got {got!r})"
    if subject:
        msg = f"{msg} [{subject}]"
    if len(errors) > 1:
        msg += f" (+{len(errors) - 1} more)"
    return msg
