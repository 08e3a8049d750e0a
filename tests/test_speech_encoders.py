"""The speech-encoder featurizers (wav2vec for wav2vec 2.0 / HuBERT / WavLM, whisper) with
tiny random checkpoints of each family built offline: shapes, masks, the pooled level, cache
keys, the cache size ``emoplug plan`` prints, and a pooled cell trained end to end."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from emoplug import EmoplugError
from emoplug.cli import main
from emoplug.registry import get_registry

SR = 16000
FAMILIES = ["wav2vec2", "hubert", "wavlm", "whisper"]
#: Whisper's window in the tiny checkpoint (30 s in the real ones): 1 s keeps tests fast
#: and makes a 2.5 s utterance span three windows
WINDOW_S = 1


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> directory of a tiny random checkpoint (2 layers, hidden 32)."""
    from emoplug_audio.tiny import tiny_speech_checkpoint

    root = tmp_path_factory.mktemp("tiny-speech")
    paths = {family: str(tiny_speech_checkpoint(family, root / family, window_s=WINDOW_S))
             for family in FAMILIES}
    paths["wav2vec2-group"] = str(tiny_speech_checkpoint("wav2vec2", root / "group",
                                                         front_end="group"))
    return paths


def build(family: str, path: str, **settings):
    kind = "whisper" if family == "whisper" else "wav2vec"
    return get_registry().build("audio", {"type": kind, "pretrained": path, **settings})


def waves(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(lengths)) / SR
    voice = np.sin(2 * np.pi * 180 * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return [(0.3 * voice[:n] + 0.05 * rng.standard_normal(n)).astype(np.float32)
            for n in lengths]


def frames_of(family: str, samples: int) -> int:
    """Real output frames: the conv front end's (receptive field 165, stride 320) or
    Whisper's ceil(samples / 320) per window."""
    if family == "whisper":
        window = WINDOW_S * SR
        return sum(-(-min(window, samples - s) // 320) for s in range(0, samples, window))
    return (samples - 165) // 320 + 1


def test_plugins_lists_the_speech_encoders():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    names = {line.split()[1] for line in result.output.splitlines() if line.startswith("audio")}
    assert {"wav2vec", "whisper"} <= names


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_level_shapes(family, tiny):
    featurizer = build(family, tiny[family], layers="all")
    assert featurizer.model_layers() == [0, 1, 2]
    for y in waves(16000, 7000, 40000):
        features = featurizer.featurize(y, SR)
        assert features.dtype == np.float16
        assert features.shape == (frames_of(family, len(y)), 3 * 32)
        assert np.isfinite(features.astype(np.float32)).all()
    some = build(family, tiny[family], layers=[1, 9])  # 9 is past the depth: the last layer
    assert some.model_layers() == [1, 2]
    assert some.featurize(waves(16000)[0], SR).shape == (frames_of(family, 16000), 64)


@pytest.mark.parametrize("family", [*FAMILIES, "wav2vec2-group"])
def test_a_padded_batch_equals_each_utterance_alone(family, tiny):
    featurizer = build(family.split("-")[0], tiny[family], layers="all", batch_size=4)
    clips = waves(16000, 5000, 11000, 40000 if family == "whisper" else 9000)
    batch = featurizer.featurize_many(clips, SR)
    for clip, batched in zip(clips, batch, strict=True):
        alone = featurizer.featurize(clip, SR)
        assert batched.shape == alone.shape
        np.testing.assert_allclose(batched.astype(np.float32), alone.astype(np.float32),
                                   atol=1e-2, rtol=0)


def test_whisper_encodes_long_utterances_window_by_window(tiny):
    featurizer = build("whisper", tiny["whisper"], layers="all")
    (y,) = waves(40000)  # 2.5 windows
    joined = np.concatenate([featurizer.featurize(y[s:s + SR], SR) for s in (0, SR, 2 * SR)])
    np.testing.assert_array_equal(featurizer.featurize(y, SR), joined)


@pytest.mark.parametrize("family", FAMILIES)
def test_pooled_level_equals_pooling_the_frame_level(family, tiny):
    (y,) = waves(24000)
    frames = build(family, tiny[family], layers="all").featurize(y, SR).astype(np.float32)
    by_layer = frames.reshape(len(frames), 3, 32)  # [T, layers, hidden]
    mean = build(family, tiny[family], layers="all", level="pooled").featurize(y, SR)
    assert mean.dtype == np.float16 and mean.shape == (1, 3 * 32)
    np.testing.assert_allclose(mean.astype(np.float32).reshape(3, 32), by_layer.mean(0),
                               atol=5e-3, rtol=0)
    stats = build(family, tiny[family], layers="all", level="pooled",
                  statistics="mean_std").featurize(y, SR).astype(np.float32)
    assert stats.shape == (1, 3 * 64)
    per_layer = stats.reshape(3, 2, 32)  # layer by layer: [mean, std]
    np.testing.assert_allclose(per_layer[:, 0], by_layer.mean(0), atol=5e-3, rtol=0)
    np.testing.assert_allclose(per_layer[:, 1], by_layer.std(0), atol=5e-3, rtol=0)


def test_cache_key_changes_with_model_level_and_layers(tiny):
    def key(family="wav2vec2", **settings):
        return build(family, tiny[family], **settings).cache_key()

    base = key()
    assert key(batch_size=1) == base  # how it is computed does not change the features
    assert key(encoder={"type": "mlp"}) == base
    changed = [key("hubert"), key("wavlm"), key(level="pooled"),
               key(level="pooled", statistics="mean_std"), key(layers=[4, 8]),
               key(layers="all"), key(downsample=2)]
    assert len({base, *changed}) == len(changed) + 1
    assert key("whisper") != key("whisper", level="pooled")
    assert key("whisper") != key("whisper", layers=[1])



def test_a_model_saved_again_into_the_same_folder_gets_another_cache_key(tmp_path):
    from emoplug_audio.tiny import tiny_speech_checkpoint

    folder = tiny_speech_checkpoint("hubert", tmp_path / "model", seed=0)
    first = build("hubert", str(folder)).cache_key()
    assert build("hubert", str(folder)).cache_key() == first
    tiny_speech_checkpoint("hubert", folder, seed=1)  # other weights, same path
    assert build("hubert", str(folder)).cache_key() != first


def test_level_settings_are_checked():
    with pytest.raises(ValidationError, match="statistics applies to level: pooled"):
        get_registry().build("audio", {"type": "whisper", "statistics": "mean_std"})
    with pytest.raises(ValidationError, match="downsample applies to level: frames"):
        get_registry().build("audio", {"type": "wav2vec", "level": "pooled", "downsample": 2})
    with pytest.raises(ValidationError, match="layers must be"):
        get_registry().build("audio", {"type": "wav2vec", "layers": []})
    pooled = get_registry().build("audio", {"type": "whisper", "level": "pooled"})
    assert pooled.config.encoder.type == "mlp" and pooled.config.layers == "all"


def test_each_featurizer_refuses_the_other_family(tiny):
    with pytest.raises(EmoplugError, match="encoder-decoder model .whisper.; use type: whisper"):
        build("wav2vec2", tiny["whisper"]).featurize(waves(8000)[0], SR)
    with pytest.raises(EmoplugError, match="is a wav2vec2 model, not Whisper"):
        build("whisper", tiny["wav2vec2"]).featurize(waves(8000)[0], SR)


def test_pooled_encoder_mixes_layers_then_an_mlp(tiny):
    import torch

    from emoplug.audio_nn import MixedLayersEncoder, MLPEncoder

    featurizer = build("wavlm", tiny["wavlm"], layers="all", level="pooled",
                       statistics="mean_std")
    encoder = featurizer.build_encoder(3 * 64)
    assert isinstance(encoder, MixedLayersEncoder) and encoder.mix.n_layers == 3
    assert isinstance(encoder.encoder, MLPEncoder)
    features = torch.from_numpy(np.stack([featurizer.featurize(y, SR) for y in
                                          waves(9000, 12000)])).float()
    out = encoder(features, torch.ones(2, 1, dtype=torch.bool))
    assert out.pooled.shape == (2, 256)


RECIPE = """
name: tiny_ssl
dataset: {{type: demo, utterances_per_speaker: 4}}
protocol: {{type: kfold, k: 2}}
seeds: [0]
train: {{epochs: 2, batch_size: 16, lr: 1.0e-2, patience: 2}}
audio:
  pooled: {{type: wav2vec, pretrained: {wavlm}, layers: all, level: pooled,
            statistics: mean_std, encoder: {{type: mlp, hidden: 16}}}}
  whisper_pooled: {{type: whisper, pretrained: {whisper}, level: pooled,
                    encoder: {{type: mlp, hidden: 16}}}}
  whisper_frames: {{type: whisper, pretrained: {whisper}, layers: [1, 2],
                    encoder: {{hidden: 16}}}}
fusion:
  none: {{type: none, hidden: 16}}
grid: {{audio: [pooled, whisper_pooled, whisper_frames], fusion: [none], approach: [direct]}}
cache_dir: {cache}
"""


@pytest.fixture(scope="module")
def recipe(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl-recipe")
    path = root / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE.format(**tiny, cache=root / "cache")))
    return path


def test_plan_prints_the_cache_each_featurizer_writes(recipe):
    result = CliRunner().invoke(main, ["plan", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    cache = json.loads(result.stdout)["audio_cache"]
    rows = {row["audio"]: row for row in cache["featurizers"]}
    seconds, files = cache["corpus_seconds"], cache["corpus_files"]
    assert files == 40 and 40 < seconds < 200
    # pooled: one row of 3 layers x (mean, std) x 32 float16 + 144 B per file
    assert rows["audio.pooled"]["corpus_bytes"] == files * (3 * 64 * 2 + 144)
    assert rows["audio.whisper_pooled"]["corpus_bytes"] == files * (3 * 32 * 2 + 144)
    # frames: 50 a second (+ half a frame a file), 2 layers x 32, float16
    assert rows["audio.whisper_frames"]["corpus_bytes"] == round(
        (50 * seconds + 0.5 * files) * 64 * 2 + 144 * files)
    per_hour = round(3600 * files / seconds)  # files in an hour of this corpus's utterances
    assert rows["audio.whisper_frames"]["bytes_per_hour"] == round(
        (50 * 3600 + 0.5 * per_hour) * 64 * 2 + 144 * per_hour)
    text = CliRunner().invoke(main, ["plan", str(recipe)]).stdout
    assert "audio.whisper_frames  float16 [50/s, 2 layers x 32]: " in text
    assert "audio.pooled          float16 [1 per file, 3 layers x 64]: " in text
    assert f"corpus: {seconds / 3600:.2f} h of audio in 40 files" in text
    unread = json.loads(CliRunner().invoke(main, ["plan", str(recipe), "--json",
                                                  "--no-data"]).stdout)["audio_cache"]
    assert unread["corpus"] == "not read (--no-data)" and unread["corpus_seconds"] is None
    pooled = {row["audio"]: row for row in unread["featurizers"]}["audio.pooled"]
    assert "corpus_bytes" not in pooled
    assert pooled["bytes_per_hour"] == 360 * (3 * 64 * 2 + 144)  # at 10 s an utterance


def test_pooled_cells_train_end_to_end_and_the_plan_estimate_holds(recipe):
    from emoplug.recipe import load_plan
    from emoplug.train.runner import run_plan

    plan = load_plan(recipe)
    out = recipe.parent / "out"
    summary = run_plan(plan, out, verbosity=-1)
    assert not summary.failed and len(summary.done) == 6
    results = [json.loads(p.read_text()) for p in out.glob("jobs/*/result.json")]
    assert len(results) == 6
    configs = [json.loads(p.read_text()) for p in out.glob("jobs/*/config.json")]
    assert {c["audio"]["level"] for c in configs} == {"pooled", "frames"}
    # what the featurizers wrote is what plan estimated (within the frames' rounding)
    cache = json.loads(CliRunner().invoke(main, ["plan", str(recipe), "--json"]).stdout)
    for row in cache["audio_cache"]["featurizers"]:
        featurizer = get_registry().build("audio", plan.components["audio"][row["audio"][6:]])
        written = sum(p.stat().st_size for p in
                      (recipe.parent / "cache" / featurizer.cache_key()).rglob("*.npy"))
        assert written == pytest.approx(row["corpus_bytes"], rel=0.01), row["audio"]


def test_validate_names_each_uncached_checkpoint_in_one_line(monkeypatch, tmp_path):
    from fakes import fake_hub_cache

    monkeypatch.setenv("IEMOCAP_ROOT", "/data/IEMOCAP_full_release")
    fake_hub_cache(monkeypatch, tmp_path / "hub", ["facebook/hubert-base-ls960"])
    result = CliRunner().invoke(main, ["validate", "recipes/ssl_audio.yaml", "--no-data"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    missing = "is not in the local Hugging Face cache and the hub is unreachable"
    entries = {"wav2vec2": ("frames", "pooled", "finetune", "staged"),
               "wavlm": ("frames", "pooled", "finetune"), "whisper": ("frames", "pooled")}
    assert lines == [
        "error: recipes/ssl_audio.yaml: "
        + ", ".join(f"audio.{name}_{entry}.pretrained" for entry in entries[name])
        + f": {checkpoint} {missing}; give a local checkpoint directory instead"
        for name, checkpoint in [("wav2vec2", "facebook/wav2vec2-base"),
                                 ("wavlm", "microsoft/wavlm-base-plus"),
                                 ("whisper", "openai/whisper-base")]]
