"""The dependency rule: core knows interfaces, plugins know core, recipes are data."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

RULES = {
    "core": ("vssflow.registry", "vssflow.plugins", "vssflow.cli", "vssflow.testing"),
    "registry": ("vssflow.plugins", "vssflow.cli"),
    "plugins": ("vssflow.cli",),
}


def _absolute_imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    rel_parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ('core', 'kernels', 'x')
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module)
            elif node.level:
                base = ["vssflow", *rel_parts[:-1]]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                names.add(".".join(base + ([node.module] if node.module else [])))
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_import_rule(folder):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _absolute_imports(path, folder):
            if any(name == bad or name.startswith(bad + ".") for bad in RULES[folder]):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_recipes_folder_is_data_only():
    stray = [p for p in (ROOT / "recipes").rglob("*") if p.is_file() and p.suffix not in (".yaml", ".md")]
    assert not stray, stray


def test_installed_namespace_has_no_bare_top_level_modules(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "import importlib.util as u\n"
        "import vssflow.core, vssflow.registry, vssflow.plugins\n"
        "print([m for m in ('core', 'registry', 'plugins') if u.find_spec(m) is not None])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------------------------
# import cycles: every import counts, including those inside functions (a local import hides a cycle, it
# does not remove it)

PACKAGES = {"core": "vssflow.core", "registry": "vssflow.registry", "plugins": "vssflow.plugins"}


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The known modules `path` imports: `from X import m` counts as importing X.m when m is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module attribute: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    assert graph["vssflow.registry.recipe"] >= {"vssflow.registry.catalog", "vssflow.registry.messages"}
    assert not _cycles(graph), "import cycles:\n" + "\n".join(" <-> ".join(c) for c in _cycles(graph))


def test_cycle_finder_sees_local_imports():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    graph["vssflow.registry.messages"] = graph["vssflow.registry.messages"] | {"vssflow.registry.recipe"}
    assert any({"vssflow.registry.messages", "vssflow.registry.recipe"} <= set(c) for c in _cycles(graph))
    assert "vssflow.core.feature_cache" in _imports(
        ROOT / "core" / "data.py", "vssflow.core.data", set(modules)
    )  # imported inside a method


DATASET_WORDS = re.compile(r"vggsound|lrs\d?|lip2wav|chem|grid_corpus|synth(etic)?(_|$)", re.IGNORECASE)


def test_core_knows_no_data_set():
    """Layout builders and the synthetic benchmark live in plugins/datasets; core keeps formats and media."""
    assert not (ROOT / "core" / "synth").exists()
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if any(
                DATASET_WORDS.fullmatch(part) for part in n.lower().strip("_").split("_"))]
    assert not offenders, offenders
    from vssflow.plugins.datasets.layouts import LAYOUTS

    assert set(LAYOUTS) == {"vggsound", "lrs", "grid", "chem", "folder"}


def test_wheel_ships_every_builtin_recipe(tmp_path):
    """`vssflow recipe show NAME` works from an installed wheel only if the recipes are package data next to
    the registry (vssflow/recipes/), where vssflow.registry.recipe looks. `make wheel-test` installs it."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from vssflow.registry.recipe import RECIPES_DIR

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    src = tmp_path / "src"  # a clean copy: an in-tree build/lib would hide what setup.py no longer ships
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("vssflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").rglob("*.yaml"))
    assert recipes and all(f"vssflow/{r}" in names for r in recipes), sorted(n for n in names if "recipes" in n)
    assert RECIPES_DIR.resolve() == (ROOT / "recipes").resolve()  # the editable layout: the same relative place
