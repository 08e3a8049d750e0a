"""Text from speech: the whisper speech recogniser, its transcript cache, ``source: asr`` cells
and the word error rate. The tiny random Whisper built here transcribes garbage, so these
tests check the plumbing, the caching and the arithmetic, not the transcripts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from emoplug.data.cache import FeatureCache, file_digest
from emoplug.data.transcripts import transcribe_corpus, transcripts_namespace, word_error_rate
from emoplug.errors import RecipeError
from emoplug.recipe import build_plan
from emoplug.registry import get_registry
from emoplug.testing import TINY_TEXT, run_recipe

DEMO = {"type": "demo", "utterances_per_speaker": 4, "min_duration": 0.4, "max_duration": 0.9}


def tiny_whisper(folder: Path) -> Path:
    """A random one-layer Whisper with a byte-level tokenizer whose vocabulary is written here
    (nothing downloaded), a 1-second window, and its special tokens suppressed in decoding,
    so every transcript is non-empty garbage."""
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(
        {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                 unk_token=end, bos_token=end, eos_token=end, pad_token=end)
    specials = ["<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>",
                "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [end, *specials]}
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, max_target_positions=32,
        max_source_positions=50,  # 100 mel frames: a 1-second window
        pad_token_id=ids[end], bos_token_id=ids[end], eos_token_id=ids[end],
        decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], bos_token_id=ids[end],
        eos_token_id=ids[end], pad_token_id=ids[end], suppress_tokens=sorted(ids.values()),
        is_multilingual=True, no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]})
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80, chunk_length=1),
                     tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    return tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """The number of waveforms of each call to the whisper model."""
    from emoplug_text.whisper import Whisper

    seen: list[int] = []
    transcribe = Whisper.transcribe

    def counted(self, waveforms):
        seen.append(len(waveforms))
        return transcribe(self, waveforms)

    monkeypatch.setattr(Whisper, "transcribe", counted)
    return seen


def asr(whisper_dir: Path, **settings) -> dict:
    return {"pretrained": str(whisper_dir), "max_new_tokens": 3, **settings}


def recipe(whisper_dir: Path, dataset: dict, *, gold: bool = False, **settings) -> dict:
    """One text-only cell per transcript source: the ASR one, and the gold one with ``gold``."""
    text = {"asr_text": {**TINY_TEXT, "source": "asr", "asr": asr(whisper_dir, **settings)}}
    if gold:
        text["gold_text"] = dict(TINY_TEXT)
    return {"name": "asr", "dataset": dataset, "protocol": {"type": "loso"},
            "train": {"epochs": 1, "batch_size": 16, "patience": 1},
            "text": text, "approach": {"direct": {"type": "direct"}},
            "grid": {"text": list(text), "approach": ["direct"]}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The demo corpus (40 utterances with audio and gold transcripts)."""
    folder = tmp_path_factory.mktemp("demo")
    return get_registry().build("dataset", DEMO).load(need_audio=True, cache_dir=folder)


def no_text_manifest(folder: Path, corpus) -> Path:
    """The demo corpus as a manifest with audio but no text column."""
    path = folder / "speech.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "speaker", "session", "label", "audio"])
        for u in corpus.utterances:
            writer.writerow([u.id, u.speaker, u.session, u.label, u.audio])
    return path


# -- the speech recogniser and its cache ------------------------------------------------------

def test_whisper_gives_one_transcript_per_waveform(whisper_dir):
    recogniser = get_registry().build("asr", {"type": "whisper", **asr(whisper_dir)})
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 16000, 30000)]
    texts = recogniser.transcribe(waves)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    assert recogniser.check() == []


def test_transcripts_are_cached_per_audio_file_and_recogniser(whisper_dir, corpus, tmp_path,
                                                              calls):
    cache = FeatureCache(tmp_path / "cache")
    recogniser = get_registry().build("asr", {"type": "whisper", **asr(whisper_dir)})
    first = transcribe_corpus(recogniser, corpus.utterances, cache)
    assert set(first.texts) == {u.id for u in corpus.utterances} and not first.failed
    assert sum(calls) == len(corpus.utterances)
    u = corpus.utterances[0]
    stored = cache.get(transcripts_namespace(recogniser), file_digest(u.audio))
    assert stored.tolist() == [first.texts[u.id]]
    calls.clear()
    again = transcribe_corpus(get_registry().build("asr", {"type": "whisper",
                                                           **asr(whisper_dir)}),
                              corpus.utterances, cache)
    assert calls == [] and again.texts == first.texts  # the model was not called again


def test_the_cache_key_changes_with_the_model_and_every_generation_setting(whisper_dir, corpus,
                                                                             tmp_path, calls):
    registry = get_registry()
    base = {"type": "whisper", **asr(whisper_dir)}
    variants = [base, {**base, "pretrained": str(tmp_path / "other")},
                {**base, "language": "en"}, {**base, "task": "translate"},
                {**base, "num_beams": 2}, {**base, "max_new_tokens": 4}]
    keys = [transcripts_namespace(registry.build("asr", v)) for v in variants]
    assert len(set(keys)) == len(variants)
    cache = FeatureCache(tmp_path / "cache")
    some = corpus.utterances[:3]
    transcribe_corpus(registry.build("asr", base), some, cache)
    calls.clear()
    transcribe_corpus(registry.build("asr", {**base, "language": "en"}), some, cache)
    assert calls == [3]  # another setting: transcribed again


def test_an_unreadable_audio_file_has_no_transcript_and_says_why(whisper_dir, tmp_path):
    from emoplug.types import Utterance

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav")
    utterances = [Utterance("a", "s", "s", None, str(broken), "x"),
                  Utterance("b", "s", "s", None, None, "x")]
    recogniser = get_registry().build("asr", {"type": "whisper", **asr(whisper_dir)})
    out = transcribe_corpus(recogniser, utterances, FeatureCache(tmp_path / "cache"))
    assert out.texts == {}
    assert out.failed["b"] == "no audio" and "cannot read audio file" in out.failed["a"]


# -- word error rate --------------------------------------------------------------------------

def test_word_error_rate_by_hand():
    # "sat" -> "sit" substituted, "mat" deleted, "big" inserted: 3 errors in 6 + 2 words;
    # case and punctuation do not count; an empty reference is left out
    scored = word_error_rate(["The cat sat on the mat.", "Hello, world!", ""],
                             ["the cat sit on the", "hello big world", "noise"])
    assert scored == {"wer": 3 / 8, "words": 8, "utterances": 2, "substitutions": 1,
                      "deletions": 1, "insertions": 1}
    assert word_error_rate(["", "..."], ["a", "b"]) is None


def test_word_error_rate_agrees_with_jiwer():
    import jiwer

    rng = np.random.default_rng(1)
    words = ["yes", "no", "maybe", "so", "what", "now"]
    refs = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(30)]
    hyps = [" ".join(rng.choice(words, rng.integers(0, 8))) for _ in range(30)]
    assert word_error_rate(refs, hyps)["wer"] == pytest.approx(jiwer.wer(refs, hyps))


# -- recipes ----------------------------------------------------------------------------------

def test_the_source_is_part_of_the_cell_and_gold_ids_are_unchanged(whisper_dir):
    plan = build_plan(recipe(whisper_dir, DEMO, gold=True))
    by_text = {c.text: c for c in plan.cells}
    gold, heard = by_text["gold_text"].config["text"], by_text["asr_text"].config["text"]
    assert "source" not in gold and "asr" not in gold  # gold cells keep the ids they had
    assert heard["source"] == "asr"
    assert heard["asr"] == {"type": "whisper", "pretrained": str(whisper_dir),
                            "language": None, "task": "transcribe", "num_beams": 1,
                            "max_new_tokens": 3, "batch_size": 8}
    assert by_text["gold_text"].id != by_text["asr_text"].id
    other = build_plan(recipe(whisper_dir, DEMO, num_beams=2))
    assert other.cells[0].id != by_text["asr_text"].id  # a recogniser setting changes the id
    # without asr, nothing in the corpus request needs text; with it, the audio is read
    assert build_plan(recipe(whisper_dir, DEMO)).corpus_request().need_text is False
    assert build_plan(recipe(whisper_dir, DEMO)).corpus_request().need_audio is True
    assert plan.size()["transcriptions"] == 1 and other.size()["transcriptions"] == 1
    both = recipe(whisper_dir, DEMO, gold=True)
    both["text"]["beams"] = {**both["text"]["asr_text"], "asr": asr(whisper_dir, num_beams=2)}
    both["grid"]["text"].append("beams")
    assert build_plan(both).size()["transcriptions"] == 2  # one per recogniser config


def test_plan_counts_the_speech_recogniser_passes(whisper_dir, tmp_path):
    import yaml
    from click.testing import CliRunner

    from emoplug.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(whisper_dir, DEMO, gold=True)))
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "(cached), 1 speech recogniser passes over its audio (cached), " in result.output


@pytest.mark.parametrize("text, problem", [
    ({"asr": {"pretrained": "x"}}, "text.t: asr settings are given but source is gold"),
    ({"source": "asr", "asr": {"beams": 2}}, "text.t.asr.beams: unknown key"),
    ({"source": "asr", "asr": {"type": "nope"}}, "text.t.asr.type: unknown speech recogniser"),
    ({"source": "spoken"}, "text.t.source: Input should be 'gold' or 'asr'"),
])
def test_bad_transcript_settings_are_one_line_each(text, problem):
    data = {"name": "r", "dataset": DEMO, "text": {"t": {**TINY_TEXT, **text}},
            "approach": {"direct": {}}, "grid": {"text": ["t"], "approach": ["direct"]}}
    with pytest.raises(RecipeError) as caught:
        build_plan(data)
    assert any(line.startswith(problem) for line in caught.value.problems), \
        caught.value.problems


def test_the_transcript_source_is_not_tuned_per_job(whisper_dir):
    data = {**recipe(whisper_dir, DEMO), "tune": {"trials": 2, "space": {
        "text.asr.num_beams": [1, 2], "text.source": ["gold", "asr"]}}}
    with pytest.raises(RecipeError) as caught:
        build_plan(data)
    assert sorted(p.split(":")[0] for p in caught.value.problems) == [
        "tune.space.text.asr.num_beams", "tune.space.text.source"]
    assert all("transcripts are made once per speech recogniser" in p
               for p in caught.value.problems)


def test_asr_transcripts_without_jiwer_say_what_to_install(whisper_dir, monkeypatch):
    import emoplug.recipe

    real = emoplug.recipe.missing_package
    monkeypatch.setattr(emoplug.recipe, "missing_package", lambda module, install: (
        f"needs {module}, which is not installed: {install}" if module == "jiwer"
        else real(module, install)))
    with pytest.raises(RecipeError) as caught:
        build_plan(recipe(whisper_dir, DEMO))
    assert caught.value.problems == [
        "text.asr_text.source: asr transcripts are scored against the gold ones by word error "
        'rate, which needs jiwer, which is not installed: pip install "emoplug[asr]"']


def test_validate_names_an_uncached_recogniser_checkpoint_in_one_line(tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from emoplug.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "r.yaml"
    data = recipe(Path("unused"), DEMO)
    data["text"]["asr_text"]["asr"] = {"pretrained": "emoplug-tests/no-whisper"}
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["validate", str(path)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, lines
    assert lines[0] == (f"error: {path}: text.asr_text.asr.pretrained: emoplug-tests/no-whisper "
                        "is not in the local Hugging Face cache and the hub is unreachable; "
                        "give a local checkpoint directory instead")


@pytest.mark.parametrize("language, known", [
    ("en", True), ("English", True), ("<|de|>", True), ("klingon", False), ("xx", False)])
def test_check_refuses_a_language_whisper_does_not_know(whisper_dir, language, known):
    recogniser = get_registry().build("asr", {"type": "whisper", **asr(whisper_dir),
                                              "language": language})
    problems = [str(p) for p in recogniser.check()]
    assert problems == ([] if known else [
        f"language: {language!r} is not a language Whisper knows; give its code (en, de, ...) "
        "or name (english, german, ...)"])


def test_a_checkpoint_that_fails_to_load_names_the_recipe_entry(tmp_path):
    from emoplug import SettingError
    from emoplug.train.context import RunContext

    broken = tmp_path / "not-whisper"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # passes the check, fails to load
    plan = build_plan({**recipe(broken, DEMO), "cache_dir": str(tmp_path / "cache")})
    ctx = RunContext(plan, tmp_path / "run")
    with pytest.raises(SettingError) as caught:
        ctx.transcripts(plan.cells[0].config["text"])
    assert str(caught.value).startswith(
        f"text.asr_text.asr.pretrained: {broken} is not a usable Whisper checkpoint (")
    assert "\n" not in str(caught.value)


# -- runs -------------------------------------------------------------------------------------

def test_an_asr_cell_runs_on_a_manifest_without_a_text_column(whisper_dir, corpus, tmp_path,
                                                               calls):
    manifest = {"type": "manifest", "path": str(no_text_manifest(tmp_path, corpus))}
    cache = tmp_path / "cache"
    results = run_recipe(recipe(whisper_dir, manifest), tmp_path / "run", cache_dir=cache,
                         folds=1)
    (result,) = results
    assert result["status"] == "done" and result["sizes"]["test"] > 0
    assert result["dropped"] == {}  # every utterance got a transcript
    assert result["transcripts"]["source"] == "asr"
    assert result["transcripts"]["wer"] == {"train": None, "dev": None, "test": None}  # no gold
    assert sum(calls) == 40  # each of the corpus's 40 files transcribed once
    calls.clear()
    run_recipe(recipe(whisper_dir, manifest), tmp_path / "again", cache_dir=cache, folds=1)
    assert calls == []  # a second run reads the cached transcripts
    # the same manifest cannot feed a cell reading gold transcripts
    gold = recipe(whisper_dir, manifest)
    gold["text"]["asr_text"] = dict(TINY_TEXT)
    with pytest.raises(RecipeError, match="no utterance of 'speech' has a transcript"):
        run_recipe(gold, tmp_path / "gold", cache_dir=cache, folds=1)


@pytest.fixture(scope="module")
def gold_and_asr(whisper_dir, tmp_path_factory) -> tuple[dict, Path, dict[str, dict]]:
    """A run of one gold-transcript and one ASR-transcript cell on the demo corpus (first
    fold): its recipe, folder and results by text entry."""
    folder = tmp_path_factory.mktemp("gold-and-asr")
    data = {**recipe(whisper_dir, DEMO, gold=True), "cache_dir": str(folder / "cache")}
    results = run_recipe(data, folder / "run", folds=1)
    return data, folder / "run", {r["names"]["text"]: r for r in results}


def test_asr_text_is_what_the_encoder_reads_and_its_wer_is_recorded(gold_and_asr):
    import torch

    from emoplug.recipe import build_plan as plan_of
    from emoplug.train.context import RunContext
    from emoplug.train.text_stage import (
        build_text_module,
        encode_texts,
        frozen_key,
        frozen_outputs,
    )

    data, run_dir, results = gold_and_asr
    assert "transcripts" not in results["gold_text"]
    record = results["asr_text"]["transcripts"]
    ctx = RunContext(plan_of(data), run_dir)
    asr_cell = next(c for c in ctx.plan.cells if c.text == "asr_text")
    heard = ctx.transcripts(asr_cell.config["text"])
    gold_cell = next(c for c in ctx.plan.cells if c.text == "gold_text")
    assert ctx.transcripts(gold_cell.config["text"]) == {
        u.id: u.text for u in ctx.corpus.utterances}
    assert heard != ctx.transcripts(gold_cell.config["text"])
    test_ids = ctx.folds[results["asr_text"]["fold"]].test
    expected = word_error_rate([ctx.by_id[i].text for i in test_ids], [heard[i] for i in test_ids])
    assert record["wer"]["test"] == expected and expected["wer"] > 0.5
    # the frozen encoder's outputs of the two sources are kept apart, and the ASR cell's
    # (cached by the run) are those of the ASR transcripts
    assert frozen_key(ctx, asr_cell.config["text"]) != frozen_key(ctx, gold_cell.config["text"])
    cpu = torch.device("cpu")
    cached = frozen_outputs(ctx, asr_cell.config["text"], cpu)
    module = build_text_module(ctx, asr_cell.config["text"], seed=0)
    utt = test_ids[0]

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and np.abs(a.astype(np.float32) - b).max() < 1e-2

    fresh = encode_texts(module, {utt: heard[utt]}, 4, cpu)[utt][0]
    gold = encode_texts(module, {utt: ctx.by_id[utt].text}, 4, cpu)[utt][0]
    assert same(cached[utt][0], fresh) and not same(cached[utt][0], gold)


def test_the_report_shows_the_wer_and_the_gold_minus_asr_difference(gold_and_asr, tmp_path):
    from emoplug.report import write_report
    from emoplug.report.collect import load_run
    from emoplug.report.transcripts import transcripts_section

    _, run_dir, results = gold_and_asr
    section = transcripts_section(load_run(run_dir))
    rows = section.tables[0].rows
    assert len(rows) == 1
    asr_ua = results["asr_text"]["metrics"]["test"]["ua"]
    gold_ua = results["gold_text"]["metrics"]["test"]["ua"]
    wer = results["asr_text"]["transcripts"]["wer"]["test"]["wer"]
    label, recogniser, jobs, shown_wer, shown_asr, twin, shown_gold, difference = rows[0]
    assert label.startswith("asr_text") and twin.startswith("gold_text")
    assert recogniser.startswith("whisper ") and jobs == "1/1"
    assert shown_wer == f"{100 * wer:.1f}"
    assert (shown_asr, shown_gold) == (f"{100 * asr_ua:.1f}", f"{100 * gold_ua:.1f}")
    assert difference == f"{100 * (gold_ua - asr_ua):+.1f}".replace("+0.0", "0.0")
    assert section.tables[1].columns[0] == "Gold vs ASR"  # the paired test of the pair
    assert any(n.startswith("The corpus is synthetic") for n in section.notes)  # demo data
    written = write_report(run_dir, tmp_path / "report", ["md", "csv"])
    assert "## Text from speech" in written["md"].read_text()
    with written["csv"].open() as f:
        rows = {row["text"]: row for row in csv.DictReader(f)}
    assert (rows["asr_text"]["text_source"], rows["gold_text"]["text_source"]) == ("asr", "gold")
    assert float(rows["asr_text"]["wer_test"]) == wer and rows["gold_text"]["wer_test"] == ""


def test_without_asr_cells_the_section_says_so(tmp_path):
    from emoplug.report.collect import load_run
    from emoplug.report.transcripts import transcripts_section

    run_recipe({**recipe(Path("unused"), DEMO, gold=True),
                "grid": {"text": ["gold_text"], "approach": ["direct"]}}, tmp_path / "run",
               folds=1)
    section = transcripts_section(load_run(tmp_path / "run"))
    assert section.empty and "No cell reads ASR transcripts" in section.empty


class _Stop(Exception):
    pass


def test_fine_tuned_and_staged_encoders_train_on_the_asr_transcripts(gold_and_asr,
                                                                       monkeypatch):
    import torch

    from emoplug.recipe import build_plan as plan_of
    from emoplug.train import text_stage
    from emoplug.train.context import RunContext
    from emoplug.train.inputs import load_inputs

    data, run_dir, _ = gold_and_asr
    seen: list[list[str]] = []

    def record_and_stop(model, loss, train, *args, **kwargs):
        seen.append([e.text for e in train.examples])
        raise _Stop

    monkeypatch.setattr(text_stage, "fit", record_and_stop)
    for mode in ("finetune", "staged"):
        data = {**data, "text": {"asr_text": {**data["text"]["asr_text"], "mode": mode}},
                "grid": {"text": ["asr_text"], "approach": ["direct"]}}
        ctx = RunContext(plan_of(data), run_dir)
        job = ctx.plan.jobs[0]
        heard = ctx.transcripts(job.cell.config["text"])
        expected = [heard[i] for i in ctx.folds[job.fold].train]
        if mode == "finetune":
            train = load_inputs(ctx, job, torch.device("cpu")).splits["train"]
            assert sorted(e.text for e in train) == sorted(expected)
        else:
            with pytest.raises(_Stop):
                text_stage.run_text_stage(ctx, job.cell.config["text"], job.fold, job.seed,
                                          accelerator=None)
            assert sorted(seen[-1]) == sorted(expected)
    assert set(expected) != {ctx.by_id[i].text for i in ctx.folds[job.fold].train}


def test_warming_transcribes_each_ranks_share_once(whisper_dir, tmp_path, calls):
    from emoplug.train.context import RunContext
    from emoplug.train.warm import warm_transcripts

    plan = build_plan({**recipe(whisper_dir, DEMO), "cache_dir": str(tmp_path / "cache")})
    ctx = RunContext(plan, tmp_path / "run")
    made = [sum(warm_transcripts(plan, ctx, rank, 2).values()) for rank in (0, 1)]
    assert made == [20, 20] and sum(calls) == 40
    calls.clear()
    assert len(ctx.transcripts(plan.cells[0].config["text"])) == 40 and calls == []


def test_featurize_fills_the_transcript_cache(whisper_dir, tmp_path):
    import yaml
    from click.testing import CliRunner

    from emoplug.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**recipe(whisper_dir, DEMO),
                                    "cache_dir": str(tmp_path / "cache")}))
    lines = []
    for _ in range(2):
        result = CliRunner().invoke(main, ["featurize", str(path)])
        assert result.exit_code == 0, result.output
        lines.append(result.stderr.strip().splitlines()[-1])
    assert lines == [f"whisper {whisper_dir}: 40 transcribed, 0 already cached",
                     f"whisper {whisper_dir}: 0 transcribed, 40 already cached"]


def test_a_saved_asr_model_transcribes_audio_given_without_text(whisper_dir, tmp_path, calls,
                                                                 monkeypatch):
    import emoplug
    from emoplug import EmoplugError

    monkeypatch.setenv("EMOPLUG_CACHE", str(tmp_path / "cache"))  # the run's and predict's
    data = recipe(whisper_dir, DEMO)
    data["train"] = {**data["train"], "save": "best"}
    (result,) = run_recipe(data, tmp_path / "run", folds=1)
    assert calls  # the run transcribed the corpus
    job = tmp_path / "run" / "jobs" / result["job"]
    expected = {row["id"]: row for row in csv.DictReader((job / "predictions.csv").open())}
    corpus = get_registry().build("dataset", DEMO).load(need_audio=True,
                                                        cache_dir=tmp_path / "cache")
    audio = {u.id: u.audio for u in corpus.utterances}
    model = emoplug.load(job / "model", device="cpu")
    rows = [emoplug.predict.Row(i, audio[i]) for i in expected]
    calls.clear()
    predicted, bad = model.predict_many(rows)
    assert bad == [] and calls == []  # the run's transcripts, read from the cache
    for row, answer in predicted:
        assert answer["category"] == expected[row.id]["predicted"]
        for label, p in answer["probabilities"].items():
            assert p == pytest.approx(float(expected[row.id][f"p_{label}"]), abs=1e-5)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav")
    with pytest.raises(EmoplugError, match="neither text nor an audio file"):
        model.predict()
    with pytest.raises(EmoplugError, match="cannot read audio file"):
        model.predict(audio=broken)
    assert model.predict(text="some words")["category"] in result["labels"]
