"""Maps the top-level folders onto the single `vssflow` namespace (core/ -> vssflow.core, ...).

The built-in recipes (recipes/*.yaml, a data folder without Python) ship as package data under
vssflow/recipes/, which is where `vssflow.registry.recipe` looks for them in an installed wheel and in the
editable layout alike (next to the registry package).
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOTS = {
    "vssflow": "src/vssflow",
    "vssflow.core": "core",
    "vssflow.registry": "registry",
    "vssflow.plugins": "plugins",
}

packages = []
for name, path in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(path)]

# every folder under recipes/ (ablations/, ablations/cpu/, ...) is a data package
RECIPES = {
    "vssflow." + ".".join(folder.parts): folder.as_posix()
    for folder in sorted([Path("recipes"), *(p for p in Path("recipes").rglob("*") if p.is_dir())])
    if any(folder.glob("*.yaml"))
}
packages += list(RECIPES)

setup(
    packages=packages,
    package_dir={**ROOTS, **RECIPES},
    package_data={name: ["*.yaml", "*.md"] for name in RECIPES},
    exclude_package_data={"": ["*.pyc"]},
)
