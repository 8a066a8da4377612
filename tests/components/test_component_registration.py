"""Registration: params are the constructor's arguments, tiny variants are small, listing imports nothing heavy."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from vssflow.registry import create, get_spec

# (kind, name, class path): components whose params model mirrors one constructor exactly
DIRECT = [
    ("encoder", "timm-video", "vssflow.plugins.encoders.timm_video:TimmVideoEncoder"),
    ("encoder", "tiny-cnn", "vssflow.plugins.encoders.video:TinyCNNEncoder"),
    ("encoder", "motion", "vssflow.plugins.encoders.video:MotionEncoder"),
    ("encoder", "lip", "vssflow.plugins.encoders.lip:LipEncoder"),
    ("encoder", "phoneme", "vssflow.plugins.encoders.phoneme:PhonemeEncoder"),
    ("encoder", "precomputed", "vssflow.plugins.encoders.precomputed:PrecomputedEncoder"),
    ("codec", "log-mel", "vssflow.plugins.codecs.log_mel:LogMelCodec"),
    ("codec", "vae", "vssflow.plugins.codecs.mel_vae:MelVAECodec"),
    ("vocoder", "griffin-lim", "vssflow.plugins.vocoders.griffin_lim:GriffinLimVocoder"),
    ("vocoder", "hifigan", "vssflow.plugins.vocoders.hifigan:HiFiGANVocoder"),
    ("vocoder", "vocos", "vssflow.plugins.vocoders.vocos:VocosVocoder"),
]
LOADERS = {"path"}  # handled by the factory: from_pretrained(path, **params)


def _load(path: str):
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("kind, name, cls", DIRECT, ids=[f"{k}:{n}" for k, n, _ in DIRECT])
def test_params_are_exactly_the_constructor_arguments(kind, name, cls):
    from vssflow.plugins.mel import MEL_FIELDS, MelParams, mel_spec

    spec = get_spec(kind, name)
    signature = inspect.signature(_load(cls).__init__).parameters
    args = {k: p for k, p in signature.items() if k != "self"}
    # `path` is either a constructor argument or the factory's from_pretrained switch
    fields = {k: f for k, f in spec.params.model_fields.items() if k in args or k not in LOADERS}
    if "mel" in args:  # the MelParams fields, given to the constructor as one MelSpec
        assert issubclass(spec.params, MelParams) and set(MEL_FIELDS) <= set(fields)
        assert mel_spec() == args.pop("mel").default
        fields = {k: f for k, f in fields.items() if k not in MEL_FIELDS}
    assert set(fields) == set(args)
    for key, field in fields.items():
        if field.is_required() or key == "vocab_size":  # vocab_size: the tokenizer's, checked elsewhere
            continue
        default = field.get_default(call_default_factory=True)
        assert _plain(default) == _plain(args[key].default), f"{name}.{key}: params {default!r}, constructor {args[key].default!r}"


def test_one_mel_model_for_every_codec_and_vocoder():
    """The mel analysis is declared once (vssflow.plugins.mel): every codec and vocoder params model extends it,
    and only hifigan (SpeechT5HifiGanConfig keys) spells parts of it out in its constructor."""
    from vssflow.plugins.mel import MelAnalysisParams, MelParams

    mel_args = {"n_fft", "win_length", "f_min", "f_max", "log_floor", "sample_rate", "n_mels", "hop_length"}
    for kind, name, cls in DIRECT:
        if kind not in ("codec", "vocoder"):
            continue
        assert issubclass(get_spec(kind, name).params, MelAnalysisParams), name
        args = set(inspect.signature(_load(cls).__init__).parameters)
        if name == "hifigan":
            continue
        assert issubclass(get_spec(kind, name).params, MelParams) and "mel" in args and not args & mel_args, name


def test_speaker_params_cover_both_variants():
    from vssflow.plugins.encoders.speaker import SpeakerEncoder, SpeakerVectorEncoder

    fields = set(get_spec("encoder", "speaker").params.model_fields)
    wave = set(inspect.signature(SpeakerEncoder.__init__).parameters) - {"self"}
    vector = set(inspect.signature(SpeakerVectorEncoder.__init__).parameters) - {"self"}
    assert fields == wave | vector | {"input"}


@pytest.mark.parametrize("kind, name", [(k, n) for k, n, _ in DIRECT] + [("encoder", "speaker")])
def test_tiny_variants_are_ci_sized(kind, name):
    spec = get_spec(kind, name)
    component = create(kind, name, **spec.tiny)
    assert sum(p.numel() for p in component.parameters()) < 400_000


def test_every_component_names_its_input_contract():
    from vssflow.core.interfaces import InputContract

    names = [(k, n) for k, n, _ in DIRECT] + [("encoder", "speaker"), ("encoder", "clip-vit-b16")]
    for kind, name in names:
        contract = create(kind, name, **get_spec(kind, name).tiny).contract
        assert isinstance(contract, InputContract), name
        assert contract.modality in ("video", "transcript", "speaker", "features", "audio", "mel"), name


def test_listing_these_plugins_imports_no_heavy_library():
    code = (
        "import sys\n"
        "import vssflow.plugins.encoders as e, vssflow.plugins.codecs as c, vssflow.plugins.vocoders as v\n"
        "specs = []\n"
        "for pkg in (e, c, v):\n"
        "    pkg.register(lambda name, factory, params=None, description='', tiny=None: specs.append(params))\n"
        "[p.model_json_schema() for p in specs]\n"
        "print(len(specs), sorted(m for m in ('torch', 'timm', 'diffusers', 'cv2', 'torchaudio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "19 []"
