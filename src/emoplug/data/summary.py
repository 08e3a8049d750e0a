"""What a loaded corpus and its folds contain: ``emoplug data summary``.

:func:`summarize` returns a JSON-serialisable dict with a fixed key order (labels in the
corpus's order, sessions/speakers/reasons sorted, folds in protocol order);
:func:`format_summary` renders it as text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from emoplug.data.audit import AUDIT_KEYS, MIN_TRANSCRIPT_WORDS
from emoplug.types import AVD_NAMES, Corpus, Fold, Utterance

UNLABELLED = "(none)"


def _label_counts(utterances: Iterable[Utterance], labels: Sequence[str]) -> dict[str, int]:
    """Counts per label in the label-set order; unlabelled or unknown labels come last."""
    counts = Counter(u.label if u.label is not None else UNLABELLED for u in utterances)
    ordered = {label: counts.pop(label, 0) for label in labels}
    ordered.update(sorted(counts.items()))
    return ordered


def _avd_stats(corpus: Corpus) -> dict[str, dict[str, float | int]]:
    """Per dimension: how many values, their min/mean/max and how many fall off the scale."""
    low, high = corpus.avd_scale
    stats = {}
    for i, dim in enumerate(AVD_NAMES):
        values = [u.avd[i] for u in corpus.utterances
                  if u.avd is not None and not math.isnan(u.avd[i])]
        if not values:
            continue
        stats[dim] = {"count": len(values), "min": min(values),
                      "mean": round(sum(values) / len(values), 4), "max": max(values),
                      "outside_scale": sum(not low <= v <= high for v in values)}
    return stats


def summarize(corpus: Corpus, folds: Sequence[Fold]) -> dict[str, Any]:
    """Counts of a corpus (per label, session, speaker), what was skipped or excluded, and
    each fold's train/dev/test sizes and label counts.

    ``excluded`` comes from ``corpus.meta["excluded"]`` (utterances a dataset leaves out on
    purpose, e.g. labels outside the label set), ``skipped`` from ``corpus.skipped``; a
    dataset's ``published_counts`` check and ``label_source`` (where labels come from when a
    corpus offers more than one source, with counts) are passed on as they are.
    """
    by_id = corpus.by_id()
    fold_rows = []
    for fold in folds:
        parts = {part: [by_id[i] for i in getattr(fold, part) if i in by_id]
                 for part in ("train", "dev", "test")}
        fold_rows.append({
            "name": fold.name,
            **{part: len(getattr(fold, part)) for part in parts},
            "labels": {part: _label_counts(utts, corpus.labels) for part, utts in parts.items()},
            "meta": {k: fold.meta[k] for k in sorted(fold.meta)},
        })
    excluded = corpus.meta.get("excluded", {})
    published = corpus.meta.get("published_counts")
    label_source = corpus.meta.get("label_source")
    return {
        "dataset": corpus.name,
        "labels": list(corpus.labels),
        "avd_scale": list(corpus.avd_scale),
        "total": len(corpus.utterances),
        "per_label": _label_counts(corpus.utterances, corpus.labels),
        "per_session": dict(sorted(Counter(u.session for u in corpus.utterances).items())),
        "per_speaker": dict(sorted(Counter(u.speaker for u in corpus.utterances).items())),
        "avd": _avd_stats(corpus),
        "skipped": {reason: {"count": corpus.skipped[reason],
                             "examples": list(corpus.skipped_examples.get(reason, []))}
                    for reason in sorted(corpus.skipped)},
        "excluded": {reason: excluded[reason] for reason in sorted(excluded)},
        "folds": fold_rows,
        **({"published_counts": published} if published else {}),
        **({"label_source": label_source} if label_source else {}),
        **({"per_corpus": _per_corpus(corpus)} if corpus.meta.get("corpora") else {}),
    }


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows as left-aligned text columns (first column left, the others right)."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(row, widths, strict=True)))
            for row in rows]


def _counts(title: str, counts: dict[str, int], total: int) -> list[str]:
    rows = [[name, str(n), f"{100 * n / total:.1f}%" if total else "-"]
            for name, n in counts.items()]
    return [f"{title}:", *(_table(rows) if rows else ["  (none)"])]


def _per_corpus(corpus: Corpus) -> dict[str, dict[str, int]]:
    """Utterances per shared label of each corpus a recipe's ``datasets`` combined."""
    return {name: _label_counts((u for u in corpus.utterances if u.meta.get("corpus") == name),
                                corpus.labels) for name in corpus.meta["corpora"]}


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`summarize`'s dict."""
    total = summary["total"]
    labels = summary["labels"]
    lines = [f"dataset {summary['dataset']}: {total} utterances, "
             f"labels: {', '.join(labels) or '(none)'}"]
    lines += _counts("per label", summary["per_label"], total)
    if "per_corpus" in summary:
        lines.append("per corpus (shared labels):")
        lines += _table([["corpus", "total", *labels]] + [
            [name, str(sum(counts.values())), *(str(counts.get(label, 0)) for label in labels)]
            for name, counts in summary["per_corpus"].items()])
    lines += _counts("per session", summary["per_session"], total)
    lines += _counts("per speaker", summary["per_speaker"], total)
    if summary["avd"]:
        low, high = summary["avd_scale"]
        rows = [["", "count", "min", "mean", "max", f"outside [{low:g}, {high:g}]"]]
        rows += [[dim, str(s["count"]), f"{s['min']:.2f}", f"{s['mean']:.2f}", f"{s['max']:.2f}",
                  str(s["outside_scale"])] for dim, s in summary["avd"].items()]
        lines += ["dimensions:", *_table(rows)]
    if summary["excluded"]:
        lines.append("excluded on purpose:")
        lines += _table([[reason, str(n)] for reason, n in summary["excluded"].items()])
    if "published_counts" in summary:
        lines += _published_lines(summary["published_counts"])
    if "label_source" in summary:
        source = summary["label_source"]
        lines.append(f"labels from: {source['description']}")
        lines += _table([[name, "-" if n is None else str(n)]
                         for name, n in source["counts"].items()])
    lines.append("skipped:" if summary["skipped"] else "skipped: nothing")
    for reason, info in summary["skipped"].items():
        lines.append(f"  {reason}: {info['count']} (e.g. {', '.join(info['examples'])})")
    if summary["folds"]:
        meta = summary["folds"][0]["meta"]
        described = ", ".join(f"{k}={v}" for k, v in meta.items()
                              if k not in ("dev_speaker", "dev_session", "audit"))
        lines.append(f"folds ({described}):" if described else "folds:")
        header = ["fold", "train", "dev", "test", *(f"test:{label}" for label in labels)]
        rows = [header] + [
            [f["name"], str(f["train"]), str(f["dev"]), str(f["test"]),
             *(str(f["labels"]["test"].get(label, 0)) for label in labels)]
            for f in summary["folds"]]
        lines += _table(rows)
        lines += _audit_lines(summary["folds"])
    return "\n".join(lines)


def _published_lines(check: dict[str, Any]) -> list[str]:
    """The corpus's files per emotion (before any label set or merge; per partition for a
    corpus that publishes only those) beside the numbers the corpus publishes, and whether
    the full corpus is present."""
    rows = [[check.get("unit", "emotion"), "found", "published"]]
    rows += [[label, str(n["found"]), str(n["published"])]
             for label, n in check["per_label"].items()]
    verdict = (f"matches the published counts: the full corpus ({check['present']} files)"
               if check["matches"] else
               f"differs from the published counts ({check['present']} of "
               f"{check['published_total']} files present)")
    return [f"published counts ({check['source']}):", *_table(rows), f"  {verdict}"]


def _audit_lines(folds: list[dict[str, Any]]) -> list[str]:
    """The leakage audit as a table: per fold, test utterances sharing each key with train
    and with dev (a dash where the corpus does not record the key)."""
    audits = [(f["name"], f["meta"].get("audit")) for f in folds]
    if not any(audit for _, audit in audits):
        return []
    header = ["fold", "test", *(f"train:{k}" for k in AUDIT_KEYS),
              *(f"dev:{k}" for k in AUDIT_KEYS), "dev", *(f"dev~train:{k}" for k in AUDIT_KEYS)]
    rows = [header]
    for name, audit in audits:
        audit = audit or {}
        rows.append([name, str(audit.get("test", "-")),
                     *(_count(audit.get(part, {}).get(k)) for part in ("train", "dev")
                       for k in AUDIT_KEYS),
                     _count((audit.get("dev_vs_train") or {}).get("dev")),
                     *(_count((audit.get("dev_vs_train") or {}).get(k)) for k in AUDIT_KEYS)])
    return ["leakage audit (test utterances whose speaker, session, dialog or normalised "
            "transcript also occurs in train / in dev; dev~train: dev utterances sharing it "
            f"with train; transcript: at least {MIN_TRANSCRIPT_WORDS} words, "
            "short_transcript: shorter):",
            *_table(rows)]


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
