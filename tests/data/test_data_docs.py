"""docs/data.md names the real API: functions, tokenizer methods, dataset params, CLI flags, layouts."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

DOC = (ROOT / "docs" / "data.md").read_text()


@pytest.mark.parametrize(
    "module,names",
    [
        ("vssflow.core.media", ["probe", "read_video", "read_audio", "write_audio", "write_video", "mux_audio",
                                "atomic_path"]),
        ("vssflow.core.manifest", ["read_manifest", "check_manifest"]),
        ("vssflow.plugins.datasets.layouts", ["build_manifest"]),
        ("vssflow.core.data", ["ClipDataset", "collate"]),
        ("vssflow.core.batch_plan", ["BatchPlan"]),
        ("vssflow.core.feature_cache", ["cached_dirs", "cache_dir_for", "read_feature_file"]),
        ("vssflow.core.feature_extraction", ["extract_features"]),
        ("vssflow.plugins.datasets.synth", ["generate", "SynthConfig"]),
    ],
)
def test_documented_functions_exist(module, names):
    import importlib

    mod = importlib.import_module(module)
    for name in names:
        assert f"{name}(" in DOC or f"`{name}`" in DOC, f"docs/data.md does not mention {name}"
        assert hasattr(mod, name), f"docs/data.md documents {module}.{name}, which does not exist"


def test_tokenizer_api_is_documented():
    from vssflow.core.phonemes import PhonemeTokenizer

    for name in ("encode", "phonemize", "decode", "to_dict", "from_dict", "encode_timed", "vocab_size", "VERSION"):
        assert name in DOC and hasattr(PhonemeTokenizer, name)
    assert f"{PhonemeTokenizer().vocab_size} ids" in DOC


@pytest.mark.parametrize("name", ["synthetic-av", "manifest"])
def test_dataset_params_are_documented(name):
    from vssflow.registry import get_spec

    row = next(line for line in DOC.splitlines() if line.startswith(f"| `{name}` |"))
    for field in get_spec("dataset", name).params.model_fields:
        assert f"`{field}" in row, f"docs/data.md: dataset {name!r} param {field!r} is not documented"


def test_cli_flags_and_layouts_are_documented():
    from vssflow.cli.main import build_parser
    from vssflow.plugins.datasets.layouts import LAYOUTS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    extract = next(a for a in sub.choices["features"]._actions if a.__class__.__name__ == "_SubParsersAction")
    flags = {o for a in extract.choices["extract"]._actions for o in a.option_strings if o.startswith("--")}
    documented = set(re.findall(r"--[a-z][a-z-]+", DOC))
    assert flags - {"--help", "--no-progress"} <= documented
    for layout in LAYOUTS:
        assert f"| `{layout}` |" in DOC
