"""Conformance checks every vssflow component must pass; also a pytest plugin (entry point `pytest11`).

Plugin authors:

    from vssflow.testing import check_component

    def test_my_encoder():
        check_component("encoder", "my-encoder")

or use the `vssflow_conformance` fixture. What is checked (timm's habit, for every kind):
  1. the component builds from its default params (required fields taken from its registered `tiny`
     params) and from its `tiny` params (`{tmp}` in a string param becomes a fresh temporary directory);
     aggregators and backbones also get the sizes assembly would resolve (`example_runtime(kind)`);
  2. `component(**component.example_inputs(batch, generator))` runs and the tensors named by
     `output_tensors` have the shapes `expected_shapes` declares; an aggregator's routes are also held to
     the route contract (`route_shapes`), and a component that declares no shape fails;
  3. every output is finite;
  4. the same seed gives the same parameters and the same output;
  5. backward from the outputs (a fixed random projection of them, so an output that starts at zero
     still passes a gradient) reaches every trainable parameter;
  6. every trainable parameter can learn: within a few sign-gradient steps each one gets a non-zero
     gradient (a zero-initialised layer behind a zero gate never does).
Datasets are checked for a non-empty length and well-formed samples instead.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TMP_PLACEHOLDER = "{tmp}"
LEARN_STEPS = 5  # sign-gradient steps in which every trainable parameter must get a non-zero gradient
LEARN_RATE = 0.05


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


def example_runtime(kind: str) -> dict[str, Any]:
    """The sizes assembly would pass to a component of `kind` besides its params (small example values)."""
    if kind == "aggregator":
        from vssflow.core.conditioning import EXAMPLE_DIMS

        return {"dims": EXAMPLE_DIMS}
    if kind == "backbone":
        from vssflow.core.conditioning import EXAMPLE_BACKBONE_SIZES

        return dict(EXAMPLE_BACKBONE_SIZES)
    return {}


def _build(kind: str, name: str, params: dict[str, Any], seed: int, runtime: dict[str, Any]) -> Any:
    import torch

    from vssflow.registry import create

    torch.manual_seed(seed)
    return create(kind, name, runtime or None, **params)


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


def _shapes(kind: str, component: Any, inputs: dict[str, Any], output: Any) -> dict[str, tuple[int, ...]]:
    """Declared shapes plus those the contract fixes (aggregator routes; a number is a scalar)."""
    shapes = dict(component.expected_shapes(inputs))
    if kind == "aggregator":
        from vssflow.core.conditioning import Conditioning, route_shapes

        if isinstance(output, Conditioning):
            for key, shape in route_shapes(component, inputs, output).items():
                shapes.setdefault(key, shape)
    if isinstance(output, (int, float)):
        shapes.setdefault("output", ())
    return shapes


def _probe_loss(tensors: dict[str, Any], seed: int) -> Any:
    """sum <t, r> over outputs with fixed random r: its gradient never vanishes because an output is zero."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    total = None
    for value in tensors.values():
        if value.requires_grad:
            r = torch.randn(value.shape, generator=gen).to(value.device)
            term = (value.float() * r).sum() / max(1, value.numel()) ** 0.5
            total = term if total is None else total + term
    return total


def _check_learns(kind: str, name: str, component: Any, trainable: list[str], batch_size: int, seed: int) -> None:
    """Fail when a trainable parameter gets no non-zero gradient within LEARN_STEPS sign-gradient steps."""
    import torch

    silent = set(trainable)
    params = dict(component.named_parameters())
    for _ in range(LEARN_STEPS):
        _, output = _call(component, batch_size, seed)
        loss = _probe_loss(_as_tensors(component, output), seed)
        component.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for pname in trainable:
                grad = params[pname].grad
                if grad is None:
                    continue
                if bool((grad != 0).any()):
                    silent.discard(pname)
                params[pname].sub_(LEARN_RATE * grad.sign())
        if not silent:
            return
    shown = ", ".join(sorted(silent)[:5]) + (f" (+{len(silent) - 5} more)" if len(silent) > 5 else "")
    _fail(kind, name, "learns", f"{shown} got only zero gradients in {LEARN_STEPS} steps "
          "(a zero-initialised layer behind a zero gate never learns: initialise one of them non-zero)")


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


def _check_adapter(name: str, adapter: Any, report: ConformanceReport, seed: int) -> None:
    """An adapter on a small DiT (named `backbone`, as in a FlowModel): it starts as the identity, trains only
    its own parameters, names them slot-free and back, scales (0 = off), and merges into plain weights that
    give the same output."""
    import torch

    from vssflow.registry import create

    torch.manual_seed(seed)
    backbone = create("backbone", "dit", example_runtime("backbone"), depth=2, width=16, heads=2)
    model = torch.nn.ModuleDict({"backbone": backbone})
    names = set(model.state_dict())
    inputs = backbone.example_inputs(2, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in backbone.parameters():  # adaLN-Zero starts at zero: give every layer something to do
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + p.numel())))
    model.eval()

    def out() -> Any:
        with torch.no_grad():
            return backbone(**inputs)

    before = out()
    adapted = adapter.attach(model, "slot0")
    if not adapted:
        _fail("adapter", name, "attach", "attach() adapted no module of a DiT backbone with its default targets")
    if not torch.allclose(out(), before, atol=1e-6):
        _fail("adapter", name, "identity at start", "the adapted model's output differs before any training")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    strays = [n for n in trainable if adapter.file_key(n, "slot0") is None]
    if not trainable or strays:
        _fail("adapter", name, "only adapter parameters train",
              f"trainable parameters that are not the adapter's: {strays[:3]}" if strays else "nothing is trainable")
    for n in trainable:
        key = adapter.file_key(n, "slot0")
        if adapter.param_name(key, "slot0") != n or "slot0" in key.split("."):
            _fail("adapter", name, "file names", f"{n} -> {key} does not round-trip slot-free")
    report.checks += ["attach", "identity at start", "only adapter parameters train", "file names"]
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + len(n))))
    changed = out()
    if torch.allclose(changed, before, atol=1e-6):
        _fail("adapter", name, "learns", "changing the adapter's parameters does not change the output")
    adapter.set_scale(model, "slot0", 0.0)
    if not torch.allclose(out(), before, atol=1e-5):
        _fail("adapter", name, "scale", "at scale 0 the output differs from the model without the adapter")
    adapter.set_scale(model, "slot0", 1.0)
    adapter.merge(model)
    if set(model.state_dict()) != names:
        _fail("adapter", name, "merge", "after merge() the model's tensor names differ from the plain model's")
    if not torch.allclose(out(), changed, atol=1e-4, rtol=1e-4):
        _fail("adapter", name, "merge", "the merged model's output differs from the adapted model's")
    report.checks += ["learns", "scale", "merge"]


def check_component(
    kind: str,
    name: str,
    params: dict[str, Any] | None = None,
    batch_size: int = 2,
    seed: int = 0,
    build_default: bool = True,
    runtime: dict[str, Any] | None = None,
) -> ConformanceReport:
    """Run the conformance checks on a registered component; ConformanceError says what failed.

    `runtime`: the sizes assembly would pass (default: `example_runtime(kind)`), e.g. an aggregator's
    `{"dims": AggregatorDims(...)}` to check it for a token condition (fps None).
    """
    import torch

    from vssflow.registry import get_spec

    spec = get_spec(kind, name)
    runtime = example_runtime(kind) if runtime is None else runtime
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
                _build(kind, name, default_params, seed, runtime)
            except Exception as exc:  # noqa: BLE001 - reported as a conformance failure
                _fail(kind, name, "builds from default params", f"{type(exc).__name__}: {exc}")
            report.checks.append("builds from default params")
        try:
            component = _build(kind, name, params, seed, runtime)
        except Exception as exc:  # noqa: BLE001 - reported as a conformance failure
            _fail(kind, name, "builds", f"{type(exc).__name__}: {exc}")
        report.checks.append("builds")

        if kind == "adapter":
            _check_adapter(name, component, report, seed)
            return report
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

        shapes = _shapes(kind, component, inputs, output)
        if not shapes:
            _fail(kind, name, "shapes", "declares no output shape: implement expected_shapes(inputs) -> "
                  f"{{name: shape}} for the outputs {sorted(tensors)}")
        for key, shape in shapes.items():
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

        again = _build(kind, name, params, seed, runtime)
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

        trainable = [n for n, p in component.named_parameters() if p.requires_grad] if is_module else []
        if trainable:
            loss = _probe_loss(tensors, seed)
            if loss is None:
                _fail(kind, name, "backward", "has trainable parameters but no output requires grad")
            component.zero_grad(set_to_none=True)
            loss.backward()
            grads = dict(component.named_parameters())
            missing = [n for n in trainable if grads[n].grad is None]
            if missing:
                shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
                _fail(kind, name, "backward", f"no gradient reaches {shown}")
            report.checks.append("backward")
            _check_learns(kind, name, component, trainable, batch_size, seed)
            report.checks.append("learns")
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
