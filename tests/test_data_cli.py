"""`emoplug data summary` and `emoplug featurize` on a small demo corpus."""

from __future__ import annotations

import json
import textwrap

from click.testing import CliRunner

from emoplug.cli import main

RECIPE = """
name: d
dataset: {type: demo, utterances_per_speaker: 6}
protocol: {type: loso}
audio: {mfcc: {type: mfcc, hop_ms: 20}, prosodic: {type: prosodic, hop_ms: 20}}
grid: {audio: [mfcc, prosodic], approach: [direct]}
"""


def recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE) + f"cache_dir: {tmp_path / 'cache'}\n")
    return path


def test_data_summary_json_is_stable(tmp_path):
    path = recipe(tmp_path)
    first = CliRunner().invoke(main, ["data", "summary", str(path), "--json"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, ["data", "summary", str(path), "--json"])
    assert first.stdout == second.stdout
    summary = json.loads(first.stdout)
    assert json.dumps(summary, sort_keys=True)  # plain JSON
    text = CliRunner().invoke(main, ["data", "summary", str(path)])
    assert text.exit_code == 0 and "Ses01" in text.stdout


def test_featurize_twice_computes_nothing_the_second_time(tmp_path):
    path = recipe(tmp_path)
    first = CliRunner().invoke(main, ["featurize", str(path)])
    assert first.exit_code == 0, first.output
    assert "mfcc: 60 computed, 0 already cached" in first.stderr
    second = CliRunner().invoke(main, ["featurize", str(path)])
    assert "mfcc: 0 computed, 60 already cached" in second.stderr
    assert "prosodic: 0 computed, 60 already cached" in second.stderr
