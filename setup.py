"""Maps the top-level folders onto the single `vssflow` namespace (core/ -> vssflow.core, ...)."""

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

setup(packages=packages, package_dir=ROOTS)
