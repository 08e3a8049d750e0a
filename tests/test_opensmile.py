"""The openSMILE featurizers (egemaps, compare): the numbers openSMILE gives, both levels,
the feature cache, and a clear refusal when the optional package is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import opensmile
import pytest
import soundfile as sf
from click.testing import CliRunner

from emoplug.cli import main
from emoplug.data.audio import load_audio
from emoplug.data.cache import FeatureCache
from emoplug.data.features import featurize_corpus, load_features
from emoplug.errors import ComponentUnavailableError
from emoplug.registry import get_registry
from emoplug.types import Utterance

SR = 16000
INSTALL = 'pip install "emoplug[opensmile]"'


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """1.5 s of a gliding harmonic tone with noise and a pause, as a 16 kHz WAV file."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140 + 40 * t) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) * (t < 1.1)
    y = (0.3 * y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    path = tmp_path_factory.mktemp("audio") / "u.wav"
    sf.write(path, y, SR)
    return path


def build(**settings):
    return get_registry().build("audio", settings)


def smile(feature_set: str, level: str) -> opensmile.Smile:
    levels = {"functionals": opensmile.FeatureLevel.Functionals,
              "lld": opensmile.FeatureLevel.LowLevelDescriptors}
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=levels[level])


@pytest.mark.parametrize(("name", "feature_set", "level", "dim"), [
    ("egemaps", "eGeMAPSv02", "functionals", 88),
    ("egemaps", "eGeMAPSv02", "lld", 25),
    ("compare", "ComParE_2016", "functionals", 6373),
    ("compare", "ComParE_2016", "lld", 65),
])
def test_features_equal_opensmile_number_for_number(wav, name, feature_set, level, dim):
    utterance = Utterance("u", "s1", "ses1", audio=str(wav))
    features = load_features(build(type=name, level=level), utterance, FeatureCache())
    expected = smile(feature_set, level).process_signal(load_audio(wav, SR), SR).to_numpy()
    np.testing.assert_array_equal(features, expected.astype(np.float32))
    frames = 1 if level == "functionals" else expected.shape[0]
    assert features.shape == (frames, dim) and features.dtype == np.float32
    if level == "lld":
        assert frames > 100  # 10 ms frames over 1.5 s


def test_default_encoder_follows_level():
    assert build(type="egemaps").encoder_config().type == "mlp"
    assert build(type="egemaps", level="lld").encoder_config().type == "cnn"
    encoder = build(type="egemaps", encoder={"type": "linear", "hidden": 8}).build_encoder(88)
    assert encoder.dim == 88  # the standardised functionals themselves: no trainable layer


def test_second_run_reads_the_cache(wav, tmp_path, monkeypatch):
    featurizer = build(type="egemaps")
    utterances = [Utterance("u", "s1", "ses1", audio=str(wav))]
    cache = FeatureCache(tmp_path / "cache")
    first = featurize_corpus(featurizer, utterances, cache)
    assert cache.stats.writes == 1 and not first.skipped
    expected = load_features(featurizer, utterances[0], cache)

    def refuse(*_):
        raise AssertionError("featurize called although the features are cached")

    again = build(type="egemaps")
    monkeypatch.setattr(type(again), "featurize", refuse)
    featurize_corpus(again, utterances, cache)
    np.testing.assert_array_equal(load_features(again, utterances[0], cache), expected)
    assert cache.stats.writes == 1 and cache.stats.hits >= 2


def test_cache_key_holds_feature_set_level_and_opensmile_version(monkeypatch):
    keys = {build(type="egemaps").cache_key(), build(type="compare").cache_key(),
            build(type="egemaps", level="lld").cache_key()}
    assert len(keys) == 3
    same = build(type="egemaps", encoder={"type": "cnn"}).cache_key()
    assert same == build(type="egemaps").cache_key()  # the encoder is not a feature setting
    monkeypatch.setattr("emoplug_opensmile.featurizers.opensmile_version", lambda: "9.9.9")
    assert build(type="egemaps").cache_key() != same


@pytest.fixture
def no_opensmile(monkeypatch):
    """opensmile cannot be imported (as when the extra is not installed)."""
    monkeypatch.setitem(sys.modules, "opensmile", None)


def test_missing_opensmile_fails_validation_with_one_line(tmp_path, no_opensmile):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""
        name: t
        dataset: {type: demo}
        audio: {egemaps: {type: egemaps, level: lld}}
        grid: {audio: [egemaps], approach: [direct]}
    """))
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and INSTALL in lines[0] and "egemaps" in lines[0], lines
    with pytest.raises(ComponentUnavailableError, match="emoplug\\[opensmile\\]"):
        build(type="compare")


def test_missing_opensmile_lists_featurizers_as_unavailable(no_opensmile):
    result = CliRunner().invoke(main, ["plugins", "--json"])
    rows = {c["name"]: c for c in json.loads(result.stdout)["components"]}
    for name in ("egemaps", "compare"):
        assert INSTALL in rows[name]["unavailable"] and rows[name]["plugin"] == "opensmile"
    assert rows["mfcc"]["unavailable"] is None
    text = CliRunner().invoke(main, ["plugins"]).stdout
    assert any(line.split()[1] == "egemaps" and "UNAVAILABLE" in line and INSTALL in line
               for line in text.splitlines())


def test_plugin_module_imports_without_opensmile():
    code = ("import sys; sys.modules['opensmile'] = None; "
            "import emoplug_opensmile.featurizers; from emoplug.registry import get_registry; "
            "r = get_registry(); names = r.names('audio'); "
            "print('egemaps' in names, r.plugins['opensmile'].error)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["True", "None"]


@pytest.mark.parametrize(("name", "level"), [("egemaps", "functionals"), ("egemaps", "lld"),
                                             ("compare", "functionals")])
def test_cache_layout_is_what_featurize_returns(name, level):
    featurizer = get_registry().build("audio", {"type": name, "level": level})
    y = (0.3 * np.sin(2 * np.pi * 180 * np.arange(2 * 16000) / 16000)).astype(np.float32)
    features = featurizer.featurize(y, 16000)
    layout = featurizer.cache_layout()
    assert features.shape[1] == layout.dim and features.dtype == layout.dtype
    rows = layout.rows_per_second * 2 + layout.rows_per_file
    assert features.shape[0] == pytest.approx(rows, rel=0.05)  # LLD windows lose a few frames
