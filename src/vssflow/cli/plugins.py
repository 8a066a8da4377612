"""`vssflow plugins [--json]`: loaded plugins, their components by kind, and failures."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `plugins` subcommand."""
    p = sub.add_parser("plugins", help="list plugins, their components and load failures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def plugins_report() -> dict:
    """Plugins with distribution, version and components by kind, plus failures."""
    from vssflow.registry import KINDS, get_registry

    reg = get_registry()
    plugins: dict[str, dict] = {}
    for name, prov in reg.provenance.items():
        plugins[name] = {
            "name": name,
            "distribution": prov.distribution,
            "version": prov.version,
            "components": {kind: [] for kind in KINDS},
        }
    for spec in reg.catalog.specs():
        entry = plugins[spec.provenance.plugin]["components"][spec.kind]
        entry.append({"name": spec.name, "description": spec.description,
                      **({"replaces": spec.replaces.plugin} if spec.replaces is not None else {})})
    for entry in plugins.values():
        entry["components"] = {k: v for k, v in entry["components"].items() if v}
    return {"plugins": list(plugins.values()), "failures": [f.as_dict() for f in reg.failures()]}


def run(args: argparse.Namespace) -> int:
    """Print the plugin report."""
    import json

    report = plugins_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for plugin in report["plugins"]:
        print(f"{plugin['name']}  ({plugin['distribution']} {plugin['version']})")
        for kind, comps in plugin["components"].items():
            print(f"  {kind}:")
            for comp in comps:
                desc = f"  {comp['description']}" if comp["description"] else ""
                if "replaces" in comp:
                    desc += f"  (replaces {comp['replaces']}'s)"
                print(f"    {comp['name']:<22}{desc}")
    for fail in report["failures"]:
        print(f"FAILED {fail['plugin']} ({fail['distribution']}) at {fail['stage']}: {fail['error']}")
    return 0
