"""The command line: plugins, validate, plan, and one-line errors for bad recipes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from emoplug.cli import main

GOOD = """
name: t
dataset: {type: demo}
text: {bert: {type: bert, tiny: true}}
audio: {mfcc: {type: mfcc}}
grid: {text: [bert, null], audio: [mfcc, null], fusion: [early, late], approach: [direct]}
"""


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_plugins_json_lists_bundled_components():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    listed = {(c["kind"], c["name"]): c for c in json.loads(result.stdout)["components"]}
    for kind, names in {
        "text": ["bert", "roberta", "xlnet", "albert", "electra", "deberta"],
        "audio": ["mfcc", "spectrogram", "prosodic", "wav2vec", "whisper"],
        "fusion": ["early", "late", "hybrid", "attention", "none"],
        "approach": ["direct", "two_stage", "joint"],
        "dataset": ["iemocap", "manifest", "demo"],
        "protocol": ["loso", "loso_speaker", "kfold", "random", "fold_files"],
    }.items():
        for name in names:
            assert listed[(kind, name)]["distribution"] == "emoplug"


def test_validate_and_plan(tmp_path):
    recipe = write(tmp_path, GOOD)
    assert invoke("validate", recipe).exit_code == 0
    result = invoke("plan", recipe, "--json")
    plan = json.loads(result.stdout)
    assert plan["cells"] == 4 and plan["folds"] == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    assert plan["jobs"] == 20 and len(plan["job_list"]) == 20
    assert plan["counts"]["modalities"] == {"text+audio": 2, "text": 1, "audio": 1}
    with_seeds = json.loads(invoke("plan", recipe, "seeds=[0,1,2]", "--json").stdout)
    assert with_seeds["jobs"] == 60


def test_full_grid_plans_the_seed_study():
    result = invoke("plan", "recipes/full_grid.yaml", "dataset.root=/any", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    cells = plan["counts"]["modalities"]
    assert cells["text+audio"] >= 192 and cells["text"] >= 6 and cells["audio"] >= 4
    assert plan["jobs"] == plan["cells"] * 5 * 3


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed", "not valid YAML: line 1"),
    ("- just\n- a list\n", "a recipe is a YAML mapping, got list"),
    (GOOD + "colour: blue\n", "colour: unknown key"),
    (GOOD.replace("fusion: [early, late]", "fusion: [early, lte]"),
     "grid.fusion[1]: unknown fusion 'lte' (did you mean 'late'?)"),
    (GOOD + "train: {epochs: many}\n", "train.epochs: Input should be a valid integer"),
    (GOOD + "train: {epochs: -2}\n", "train.epochs: Input should be greater than or equal to 1"),
    (GOOD.replace("approach: [direct]", "approach: []"), "grid.approach: empty list"),
    (GOOD.replace("{type: demo}", "{type: manifest, path: '${EMOPLUG_TEST_UNSET}'}"),
     "dataset.path: environment variable ${EMOPLUG_TEST_UNSET} is not set"),
    (GOOD.replace("{type: mfcc}", "{type: mfcc, n_mfcc: 0}"), "audio.mfcc.n_mfcc"),
    (GOOD.replace("{type: bert, tiny: true}", "{type: bret}"),
     "text.bert.type: unknown text encoder 'bret' (did you mean 'bert'?)"),
])
def test_bad_recipe_is_one_line_exit_2(tmp_path, monkeypatch, text, expected):
    monkeypatch.delenv("EMOPLUG_TEST_UNSET", raising=False)
    recipe = write(tmp_path, text)
    result = invoke("validate", recipe)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.startswith(f"error: {recipe}: ")
    assert "Traceback" not in result.output


def test_missing_recipe_file(tmp_path):
    result = invoke("plan", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml: file not found" in result.stderr


def test_bad_override_is_one_line(tmp_path):
    recipe = write(tmp_path, GOOD)
    result = invoke("validate", recipe, "train.epochs")
    assert result.exit_code == 2
    assert "override 'train.epochs': expected KEY.PATH=VALUE" in result.stderr


def test_help_imports_no_heavy_modules():
    code = ("import sys; from click.testing import CliRunner; from emoplug.cli import main; "
            "CliRunner().invoke(main, ['--help']); "
            "from emoplug.registry import get_registry; get_registry().all(); "
            "heavy = [m for m in ('torch', 'transformers', 'librosa', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


#: the speech encoders and speech recognisers the bundled recipes name
SPEECH_CHECKPOINTS = ["facebook/wav2vec2-base", "facebook/hubert-base-ls960",
                      "microsoft/wavlm-base-plus", "openai/whisper-base", "openai/whisper-small"]


@pytest.mark.parametrize("recipe", sorted(p.name for p in Path("recipes").glob("*.yaml")))
def test_every_bundled_recipe_validates(recipe, monkeypatch, tmp_path):
    from fakes import fake_hub_cache

    from emoplug_text.families import FAMILIES

    # validation checks hub checkpoints are cached (the hub is off): pretend they are
    fake_hub_cache(monkeypatch, tmp_path / "hub",
                   [f.checkpoint for f in FAMILIES.values()] + SPEECH_CHECKPOINTS)
    monkeypatch.setenv("IEMOCAP_ROOT", "/data/IEMOCAP_full_release")
    # IEMOCAP is not in the repository: those recipes are checked without reading the data
    iemocap = "type: iemocap" in Path(f"recipes/{recipe}").read_text()
    result = invoke("validate", f"recipes/{recipe}", *(["--no-data"] if iemocap else []))
    assert result.exit_code == 0, result.output
