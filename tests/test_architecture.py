"""The dependency rule: core knows interfaces, plugins know core, recipes are data."""

from __future__ import annotations

import ast
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
