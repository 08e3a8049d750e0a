"""Several corpora in one recipe: namespacing, label maps, cross-corpus protocols and folds,
the train × test matrix of the report."""

from __future__ import annotations

import copy
import csv
import textwrap

import pytest
from click.testing import CliRunner

from emoplug.cli import main
from emoplug.data.loading import load_corpus_and_folds
from emoplug.errors import RecipeError
from emoplug.recipe import build_plan

LABELS = ("neu", "hap", "ang", "sad")


def write_manifest(path, labels=LABELS, speakers=4, per_speaker=8, ids="u"):
    """A text-only manifest: ``speakers`` speakers, each with ``per_speaker`` utterances
    cycling through ``labels``; ids ``<ids><n>`` (the same in every corpus written alike)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "speaker", "session", "label", "text"])
        n = 0
        for s in range(speakers):
            for i in range(per_speaker):
                label = labels[i % len(labels)]
                writer.writerow([f"{ids}{n}", f"spk{s}", f"ses{s}", label,
                                 f"words of a {label} line number {n}"])
                n += 1
    return path


@pytest.fixture
def corpora(tmp_path):
    """Three manifest corpora a, b, c with the same ids and speaker names."""
    return {name: str(write_manifest(tmp_path / f"{name}.csv")) for name in "abc"}


def recipe(corpora, **changes):
    data = {"name": "cc",
            "datasets": {name: {"type": "manifest", "path": path}
                         for name, path in corpora.items()},
            "protocol": {"type": "cross_corpus", "train": ["a", "b"], "test": "c"},
            "text": {"t": {"type": "bert", "tiny": True, "mode": "frozen"}},
            "extra": [{"text": "t", "approach": "direct"}]}
    data.update(copy.deepcopy(changes))
    return data


def load(data):
    plan = build_plan(copy.deepcopy(data), "r.yaml")
    return plan, *load_corpus_and_folds(plan.corpus_request(), warn=False)


def problems(data) -> str:
    with pytest.raises(RecipeError) as err:
        load(data)
    return str(err.value)


# -- validation -------------------------------------------------------------------------------

def test_an_unmapped_label_is_refused_naming_the_key(corpora):
    shared = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}
    text = problems(recipe(corpora, label_map={
        "a": {k: v for k, v in shared.items() if k != "sad"}, "b": shared, "c": shared}))
    assert text == ("r.yaml: label_map.a: label 'sad' of 'a' is not mapped (map it to a shared "
                    "label, or to null to leave its utterances out)")


def test_a_label_map_key_that_is_no_label_of_its_corpus_is_warned_about(corpora):
    identity = {label: label for label in LABELS}
    plan, corpus, folds = load(recipe(corpora, label_map={"b": {**identity, "fear": "sad"}}))
    assert corpus.meta["warnings"] == [
        "label_map.b: 'fear' are not labels of 'b' (its labels: ang, hap, neu, sad): not used"]


def test_a_target_label_missing_in_the_test_corpus_is_refused(corpora, tmp_path):
    corpora["c"] = str(write_manifest(tmp_path / "c3.csv", labels=("neu", "hap", "ang")))
    text = problems(recipe(corpora))
    assert text == ("r.yaml: protocol: fold a+b->c: label(s) 'sad' of the shared label set "
                    "never occur in test corpus 'c'; a class must be trained and tested: map "
                    "it onto another label, or drop it with null, in label_map.c")
    # mapped away (sad -> null in a and b), the shared set has no sad and the study is valid
    drop = {"neu": "neu", "hap": "hap", "ang": "ang", "sad": None}
    plan, corpus, folds = load(recipe(corpora, label_map={"a": drop, "b": drop}))
    assert corpus.labels == ("ang", "hap", "neu")
    assert corpus.meta["excluded"] == {"a: dropped by label_map": 8, "b: dropped by label_map": 8}


def test_a_target_label_missing_in_training_is_refused(corpora, tmp_path):
    corpora["a"] = str(write_manifest(tmp_path / "a3.csv", labels=("neu", "hap", "ang")))
    corpora["b"] = str(write_manifest(tmp_path / "b3.csv", labels=("neu", "hap", "ang")))
    assert ("protocol: fold a+b->c: label(s) 'sad' of the shared label set never occur in the "
            "training part (dev held out) of 'a+b'" in problems(recipe(corpora)))


def test_a_corpus_without_transcripts_is_refused_when_a_cell_reads_text(corpora, tmp_path):
    untranscribed = tmp_path / "b_audio.csv"  # audio only (not opened: the cell reads text)
    rows = (tmp_path / "b.csv").read_text().splitlines()
    untranscribed.write_text("\n".join([rows[0].replace(",text", ",audio"), *(
        f"{line.rsplit(',', 1)[0]},{i}.wav" for i, line in enumerate(rows[1:]))]) + "\n")
    corpora["b"] = str(untranscribed)
    assert "datasets.b: a cell of the recipe reads text, but no utterance of 'b_audio' has a " \
        "transcript" in problems(recipe(corpora))


@pytest.mark.parametrize("change, message", [
    ({"protocol": {"type": "cross_corpus", "train": ["a"], "test": "z"}},
     "protocol: protocol cross_corpus: corpus 'z' is not in `datasets` (a, b, c)"),
    ({"protocol": {"type": "cross_corpus", "train": ["a", "c"], "test": "c"}},
     "protocol.test: test corpus 'c' is also a training corpus"),
    ({"protocols": {"in_z": {"type": "loso", "within": "z"}},
      "extra": [{"text": "t", "approach": "direct", "protocol": "in_z"}]},
     "protocols.in_z.within: 'z' is not a name in `datasets` (a, b, c)"),
    ({"label_map": {"z": {"neu": "neu"}}}, "label_map.z: not a name in `datasets` (a, b, c)"),
    ({"dataset": {"type": "demo"}},
     "datasets: give `dataset` (one corpus) or `datasets` (several), not both"),
])
def test_recipe_mistakes_name_the_key(corpora, change, message):
    with pytest.raises(RecipeError) as err:
        build_plan(recipe(corpora, **change), "r.yaml")
    assert message in str(err.value)


def test_cross_corpus_protocols_need_several_corpora():
    data = {"name": "one", "dataset": {"type": "demo"},
            "protocol": {"type": "leave_one_corpus_out"},
            "audio": {"m": {"type": "mfcc"}}, "extra": [{"audio": "m", "approach": "direct"}]}
    with pytest.raises(RecipeError) as err:
        build_plan(data, "r.yaml")
    assert str(err.value) == ("r.yaml: protocol: protocol leave_one_corpus_out needs a recipe "
                              "with two or more corpora in `datasets:` (found one `dataset`)")


def test_validate_prints_one_line_and_exits_2(corpora, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        name: cc
        datasets:
          a: {type: manifest, path: a.csv}   # relative: read from the recipe's folder
          b: {type: manifest, path: b.csv}
        label_map:
          a: {neu: neutral, hap: happy, ang: angry}
        protocol: {type: leave_one_corpus_out}
        text: {t: {type: bert, tiny: true, mode: frozen}}
        extra: [{text: t, approach: direct}]
        """))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {path}: label_map.a: label 'sad' of 'a' is not mapped (map it to a "
        "shared label, or to null to leave its utterances out)"]


# -- folds ------------------------------------------------------------------------------------

def test_ids_and_speakers_are_namespaced_so_corpora_cannot_collide(corpora):
    plan, corpus, folds = load(recipe(corpora))
    ids = [u.id for u in corpus.utterances]
    assert len(ids) == len(set(ids)) == 3 * 32  # every corpus has ids u0..u31
    assert {u.id for u in corpus.utterances if u.meta["corpus"] == "b"} == {
        f"b/u{i}" for i in range(32)}
    assert {u.speaker for u in corpus.utterances if u.meta["corpus"] == "c"} == {
        f"c/spk{s}" for s in range(4)}
    assert corpus.labels == ("ang", "hap", "neu", "sad")  # no map: labels as they are


def test_cross_corpus_fold_trains_on_train_corpora_and_draws_dev_from_them_by_speaker(corpora):
    plan, corpus, (fold,) = load(recipe(corpora))
    by_id = corpus.by_id()
    assert plan.folds == [fold.name] == ["a+b->c"]

    def corpora_of(ids):
        return {by_id[i].meta["corpus"] for i in ids}

    assert corpora_of(fold.test) == {"c"} and len(fold.test) == 32
    assert corpora_of(fold.train) == {"a", "b"}
    assert corpora_of(fold.dev) == {"a", "b"}  # every training corpus gives dev speakers
    dev_speakers = {by_id[i].speaker for i in fold.dev}
    assert not dev_speakers & {by_id[i].speaker for i in fold.train}  # speaker-grouped
    assert len(fold.train) + len(fold.dev) == 64
    assert fold.meta["train_corpora"] == "a+b" and fold.meta["test_corpus"] == "c"
    audit = fold.meta["audit"]  # the leakage audit runs: no speaker crosses corpora
    assert audit["train"]["speaker"] == 0 and audit["dev"]["speaker"] == 0


def test_data_summary_counts_each_corpus_on_the_shared_labels(corpora, tmp_path):
    from emoplug.data.summary import format_summary, summarize

    corpora["c"] = str(write_manifest(tmp_path / "c2.csv", labels=("neu", "hap"), speakers=2))
    merge = {"neu": "calm", "hap": "aroused", "ang": "aroused", "sad": "calm"}
    plan, corpus, folds = load(recipe(corpora, label_map={"a": merge, "b": merge, "c": merge}))
    summary = summarize(corpus, folds)
    assert summary["per_corpus"] == {"a": {"aroused": 16, "calm": 16},
                                     "b": {"aroused": 16, "calm": 16},
                                     "c": {"aroused": 8, "calm": 8}}
    assert "  c          16        8     8" in format_summary(summary).splitlines()


def test_leave_one_corpus_out_tests_each_corpus_once(corpora):
    plan, corpus, folds = load(recipe(corpora, protocol={"type": "leave_one_corpus_out"}))
    by_id = corpus.by_id()
    assert [f.name for f in folds] == ["a", "b", "c"]
    for fold in folds:
        assert {by_id[i].meta["corpus"] for i in fold.test} == {fold.name}
        assert fold.name not in {by_id[i].meta["corpus"] for i in (*fold.train, *fold.dev)}


def test_a_protocol_within_a_corpus_splits_that_corpus_alone(corpora):
    data = recipe(corpora, protocols={"in_b": {"type": "loso", "within": "b"}},
                  extra=[{"text": "t", "approach": "direct", "protocol": "in_b"}])
    plan, corpus, folds = load(data)
    by_id = corpus.by_id()
    assert plan.protocol_folds["in_b"] == [f"in_b:b/ses{s}" for s in range(4)]
    assert [f.name for f in folds] == plan.protocol_folds["in_b"]
    for fold in folds:
        assert {by_id[i].meta["corpus"] for i in (*fold.train, *fold.dev, *fold.test)} == {"b"}
    assert plan.jobs[0].resolved_config()["protocol"]["within"] == "b"


def test_a_shared_label_missing_in_the_one_corpus_a_protocol_splits_is_refused(corpora,
                                                                               tmp_path):
    corpora["b"] = str(write_manifest(tmp_path / "b3.csv", labels=("neu", "hap", "ang")))
    data = recipe(corpora, protocols={"in_b": {"type": "loso", "within": "b"}},
                  extra=[{"text": "t", "approach": "direct", "protocol": "in_b"}])
    assert problems(data) == (
        "r.yaml: protocols.in_b.within: label(s) 'sad' of the shared label set never occur in "
        "'b', so a model trained within it never learns them; map them onto its labels "
        "(label_map) or study 'b' apart")


def test_a_recipe_with_one_dataset_keeps_its_job_ids():
    from fakes import fake_registry

    data = {"name": "r", "dataset": {"type": "fakedata", "sessions": 1},
            "protocol": {"type": "fakeloso"}, "extra": [{"text": "bert", "approach": "direct"}]}
    plan = build_plan(data, "r.yaml", fake_registry())
    # the ids this recipe had before `datasets` existed: finished runs are not re-run
    assert (plan.jobs[0].id, plan.cells[0].id) == ("8727311a43feacca", "69584dcd9a95")
    assert "datasets" not in plan.jobs[0].resolved_config()


def test_job_ids_depend_on_the_label_map(corpora):
    shared = {label: label for label in LABELS}
    plain = build_plan(recipe(corpora), "r.yaml").jobs[0].id
    mapped = build_plan(recipe(corpora, label_map={"a": {**shared, "sad": "ang"}}),
                        "r.yaml").jobs[0]
    assert mapped.id != plain
    assert mapped.resolved_config()["label_map"] == {"a": {**shared, "sad": "ang"}}


# -- end to end: the report's matrix ------------------------------------------------------------

def test_a_cross_corpus_run_reports_the_train_by_test_matrix(tmp_path):
    from emoplug.report.collect import load_run
    from emoplug.report.figures import save_chart
    from emoplug.report.sections import build_report
    from emoplug.report.stats import summarize
    from emoplug.report.tables import fmt_summary
    from emoplug.testing import run_recipe

    short = {"type": "demo", "utterances_per_speaker": 4, "sample_rate": 8000,
             "min_duration": 0.4, "max_duration": 0.6}
    data = {"name": "cc",
            "datasets": {"north": {**short, "seed": 1}, "south": {**short, "seed": 2}},
            "protocols": {"across": {"type": "leave_one_corpus_out"},
                          "within_south": {"type": "kfold", "k": 2, "within": "south",
                                           "dev": "speaker"}},
            "train": {"epochs": 2, "batch_size": 16},
            "audio": {"m": {"type": "mfcc", "n_mfcc": 13, "hop_ms": 20,
                            "encoder": {"hidden": 8, "stride": 2}}},
            "grid": {"audio": ["m"], "approach": ["direct"],
                     "protocol": ["across", "within_south"]}}
    results = run_recipe(data, tmp_path / "run")
    ua = {(r["protocol"].get("train_corpora"), r["protocol"].get("test_corpus")):
          r["metrics"]["test"]["ua"] for r in results if "test_corpus" in r["protocol"]}
    assert set(ua) == {("south", "north"), ("north", "south")}
    within = [r["metrics"]["test"]["ua"] for r in results if r["protocol"].get("within")]
    assert len(within) == 2

    sections = {s.key: s for s in build_report(load_run(tmp_path / "run")).sections}
    assert "utterances studied (synthetic, generated data" in sections["data"].empty
    section = sections["cross_corpus"]
    matrix = section.tables[0]
    assert matrix.columns == ["Trained on \\ tested on", "north", "south"]
    assert matrix.rows == [
        ["north", "—", fmt_summary(summarize([ua["north", "south"]]), "ua")],
        ["south", fmt_summary(summarize([ua["south", "north"]]), "ua"), "—"],
        ["in-corpus", "—", fmt_summary(summarize(within), "ua")]]
    assert "finds 0 of their 80 test utterances with a speaker in train or dev" in \
        section.notes[-3]
    assert section.notes[-2].startswith("The corpora are synthetic (generated demo data)")
    assert "No in-corpus score for north" in section.notes[-1]
    (chart,) = section.charts  # the heatmap: one panel, rows north, south, in-corpus
    (name, rows, columns, values), = chart.panels
    assert (rows, columns) == (["north", "south", "in-corpus"], ["north", "south"])
    assert values[0, 1] == pytest.approx(ua["north", "south"])
    assert values[2, 1] == pytest.approx(sum(within) / 2)
    assert save_chart(chart, tmp_path / "figures", "cross_corpus")["png"].is_file()
