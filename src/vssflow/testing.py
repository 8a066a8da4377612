"""Conformance checks every vssflow component must pass; also a pytest plugin (entry point `pytest11`).

Plugin authors:

    from vssflow.testing import check_component

    def test_my_encoder():
        check_component("encoder", "my-encoder")

or use the `vssflow_conformance` fixture. What is checked (timm's habit, for every kind):
  1. the component builds from its default params (required fields taken from its registered `tiny`
     params) and from its `tiny` params (`{tmp}` in a string param becomes a fresh temporary directory);
  2. `component(**component.example_inputs(batch, generator))` runs and the tensors named by
     `output_tensors` have the shapes `expected_shapes` declares;
  3. every output is finite;
  4. backward from the outputs reaches every trainable parameter;
  5. the same seed gives the same parameters and the same output.
Datasets are checked for a non-empty length and well-formed samples instead.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TMP_PLACEHOLDER = "{tmp}"


class ConformanceError(AssertionError):
    """A component broke the conformance contract; the message says which check and why."""


@dataclass
class ConformanceReport:
    """What the check did, for reporting."""

    kind: str
    name: str
    params: dict[str, Any]
    checks: list[str] = field(default_factory=list)


def _fill_tmp(params: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {k: (v.replace(TMP_PLACEHOLDER, str(tmp)) if isinstance(v, str) else v) for k, v in params.items()}


def _build(kind: str, name: str, params: dict[str, Any], seed: int) -> Any:
    import torch

    from vssflow.registry import create

    torch.manual_seed(seed)
    return create(kind, name, **params)


def _call(component: Any, batch_size: int, seed: int) -> tuple[dict[str, Any], Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    inputs = component.example_inputs(batch_size, gen)
    torch.manual_seed(seed)
    return inputs, component(**inputs)


def _fail(kind: str, name: str, check: str, why: str) -> None:
    raise ConformanceError(f"{kind} {name!r} fails conformance check '{check}': {why}")


def _as_tensors(component: Any, output: Any) -> dict[str, Any]:
    import torch

    if isinstance(output, (int, float)):
        return {"output": torch.tensor(float(output))}
    return component.output_tensors(output)


def _check_dataset(kind: str, name: str, ds: Any, report: ConformanceReport) -> None:
    try:
        n = len(ds)
    except TypeError:
        _fail(kind, name, "length", "datasets must define __len__")
    if n <= 0:
        _fail(kind, name, "length", "dataset is empty with its tiny params")
    sample = ds[0]
    if not isinstance(sample, dict):
        _fail(kind, name, "sample", f"ds[0] must be a dict, got {type(sample).__name__}")
    missing = [k for k in ("id", "task") if k not in sample]
    if missing:
        _fail(kind, name, "sample", f"ds[0] lacks keys {missing}")
    report.checks += ["length", "sample"]


def check_component(
    kind: str,
    name: str,
    params: dict[str, Any] | None = None,
    batch_size: int = 2,
    seed: int = 0,
    build_default: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on a registered component; ConformanceError says what failed."""
    import torch

    from vssflow.registry import get_spec

    spec = get_spec(kind, name)
    with tempfile.TemporaryDirectory(prefix="vssflow-conformance-") as tmp:
        tmp_path = Path(tmp)
        if params is None:
            params = spec.tiny
        params = _fill_tmp(dict(params), tmp_path)
        report = ConformanceReport(kind, name, params)
        if build_default and params:
            try:
                # defaults for everything the params model defaults; required fields come from `tiny`
                required = [k for k, f in spec.params.model_fields.items() if f.is_required()]
                default_params = {k: params[k] for k in required if k in params}
                _build(kind, name, default_params, seed)
            except Exception as exc:  # noqa: BLE001 - reported as a conformance failure
                _fail(kind, name, "builds from default params", f"{type(exc).__name__}: {exc}")
            report.checks.append("builds from default params")
        component = _build(kind, name, params, seed)
        report.checks.append("builds")

        if not hasattr(component, "example_inputs") and hasattr(component, "__getitem__"):
            _check_dataset(kind, name, component, report)
            return report
        if not hasattr(component, "example_inputs"):
            _fail(kind, name, "example inputs", "component does not implement example_inputs(batch_size, generator)")

        is_module = isinstance(component, torch.nn.Module)
        inputs, output = _call(component, batch_size, seed)
        tensors = _as_tensors(component, output)
        if not tensors:
            _fail(kind, name, "forward", "output_tensors() returned no tensors")
        report.checks.append("forward")

        for key, shape in component.expected_shapes(inputs).items():
            if key not in tensors:
                _fail(kind, name, "shapes", f"expected an output named {key!r}, got {sorted(tensors)}")
            if tuple(tensors[key].shape) != tuple(shape):
                _fail(kind, name, "shapes", f"{key} has shape {tuple(tensors[key].shape)}, expected {tuple(shape)}")
        report.checks.append("shapes")

        for key, value in tensors.items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                bad = (~torch.isfinite(value)).sum().item()
                _fail(kind, name, "finite", f"{key} has {bad} non-finite values")
        report.checks.append("finite")

        trainable = (
            [(n, p) for n, p in component.named_parameters() if p.requires_grad] if is_module else []
        )
        if trainable:
            grads = [t for t in tensors.values() if t.requires_grad]
            if not grads:
                _fail(kind, name, "backward", "has trainable parameters but no output requires grad")
            loss = sum((t.float() ** 2).mean() for t in grads)
            component.zero_grad(set_to_none=True)
            loss.backward()
            missing = [n for n, p in trainable if p.grad is None]
            if missing:
                shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
                _fail(kind, name, "backward", f"no gradient reaches {shown}")
            report.checks.append("backward")

        again = _build(kind, name, params, seed)
        if is_module:
            a_state, b_state = component.state_dict(), again.state_dict()
            for key in a_state:
                if not torch.equal(a_state[key], b_state[key]):
                    _fail(kind, name, "determinism", f"same seed gave different initial parameter {key}")
        _, output2 = _call(again, batch_size, seed)
        tensors2 = _as_tensors(again, output2)
        for key, value in tensors.items():
            if not torch.allclose(value.detach().float(), tensors2[key].detach().float(), rtol=1e-5, atol=1e-6):
                _fail(kind, name, "determinism", f"same seed gave a different {key}")
        report.checks.append("determinism")
    return report


def conformance_cases(distribution: str | None = None) -> list[tuple[str, str]]:
    """(kind, name) of every registered component, optionally from one distribution."""
    from vssflow.registry import list_components

    return [
        (s.kind, s.name)
        for s in list_components()
        if distribution is None or s.provenance.distribution == distribution
    ]


@pytest.fixture
def vssflow_conformance():
    """The `check_component` function, as a fixture for plugin test suites."""
    return check_component
