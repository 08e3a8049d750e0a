"""The plugin author's kit: ``emoplug.testing`` fixtures, plugin disabling and tracing, and
broken third-party plugins found through real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from emoplug import ComponentConfig, EmoplugError, Fusion
from emoplug.registry import get_registry, reset_registry
from emoplug.testing import check_fusion

pytest_plugins = ["pytester"]

BUNDLED_FUSIONS = {"attention", "early", "hybrid", "late", "none"}


def emoplug_cli(*args: str, env: dict[str, str] | None = None,
                pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``emoplug ARGS`` in a fresh process (what the console script runs)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("EMOPLUG_DISABLE_PLUGINS", "EMOPLUG_TRACE_PLUGINS")}
    environ.update(env or {})
    if pythonpath is not None:
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath), *filter(None, [environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-c", "from emoplug.cli import main; main()", *args],
                          capture_output=True, text=True, env=environ, timeout=60)


def listed(payload: dict, kind: str) -> set[str]:
    return {c["name"] for c in payload["components"] if c["kind"] == kind}


# -- input factories ---------------------------------------------------------------------------

def test_tiny_encoded_has_padding_and_masked_mean(tiny_encoded):
    encoded = tiny_encoded(batch=5, length=9, dim=3, seed=2, pad_value=-7.0)
    assert encoded.sequence.shape == (5, 9, 3) and encoded.pooled.shape == (5, 3)
    assert encoded.mask.dtype == torch.bool and encoded.mask[0].all()
    assert not encoded.mask.all(), "some rows must be padded"
    assert (encoded.sequence[~encoded.mask] == -7.0).all()
    for mask in encoded.mask:
        assert mask[: mask.sum()].all(), "padding is at the end"
    expected = torch.stack([s[m].mean(0) for s, m in zip(encoded.sequence, encoded.mask,
                                                          strict=True)])
    assert torch.allclose(encoded.pooled, expected)
    again = tiny_encoded(batch=5, length=9, dim=3, seed=2, pad_value=-7.0)
    assert torch.equal(encoded.sequence, again.sequence), "seeded"
    with pytest.raises(ValueError):
        tiny_encoded(batch=2, length=4, lengths=[4, 5])


def test_encoded_batch_gives_each_modality_its_own_shapes(encoded_batch):
    batch = encoded_batch({"text": 8, "audio": 5}, batch=3, lengths={"audio": 30})
    assert set(batch) == {"text", "audio"}
    assert batch["text"].sequence.shape == (3, 7, 8)
    assert batch["audio"].sequence.shape == (3, 30, 5)
    assert batch["audio"].dim == 5


def test_tiny_corpus_is_a_small_demo_corpus(tiny_corpus):
    assert tiny_corpus.name == "demo" and len(tiny_corpus.utterances) == 60
    assert len({u.session for u in tiny_corpus.utterances}) == 5
    assert set(tiny_corpus.labels) == {u.label for u in tiny_corpus.utterances}
    assert all(Path(u.audio).is_file() and u.text for u in tiny_corpus.utterances)


# -- check_fusion ------------------------------------------------------------------------------

class _FlatMean(nn.Module):
    """Averages every position, padding included: breaks the mask contract."""

    def __init__(self, input_dims: dict[str, int], out_dim: int):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.out = nn.Linear(sum(input_dims.values()), out_dim)

    def forward(self, inputs):
        return self.out(torch.cat([inputs[m].sequence.mean(1) for m in self.modalities], -1))


class FlatMeanFusion(Fusion):
    name = "kit_flat_mean"

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        return _FlatMean(input_dims, out_dim)


class _Concat(nn.Module):
    def __init__(self, input_dims: dict[str, int], out_dim: int, extra: int = 0,
                 unused: bool = False):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.out = nn.Linear(sum(input_dims.values()), out_dim + extra)
        self.unused = nn.Linear(2, 2) if unused else None

    def forward(self, inputs):
        return self.out(torch.cat([inputs[m].pooled for m in self.modalities], -1))


class ConcatConfig(ComponentConfig):
    extra_outputs: int = 0


class ConcatFusion(Fusion):
    """Concatenated pooled vectors through one linear layer (a minimal third-party fusion)."""

    name = "kit_concat"
    Config = ConcatConfig

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        if not input_dims:
            raise EmoplugError("fusion 'kit_concat': no modality")
        return _Concat(input_dims, out_dim, extra=self.config.extra_outputs)


class UnusedParameterFusion(ConcatFusion):
    name = "kit_unused"

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        return _Concat(input_dims, out_dim, unused=True)


class ExplodingFusion(Fusion):
    name = "kit_exploding"

    def build(self, input_dims: dict[str, int], out_dim: int) -> nn.Module:
        raise RuntimeError("kit_exploding cannot be built")


def test_check_fusion_passes_bundled_fusions():
    registry = get_registry()
    for name in ("early", "late", "hybrid"):
        check_fusion(registry.build("fusion", {"type": name, "hidden": 8}))
    check_fusion(registry.build("fusion", {"type": "attention", "hidden": 8, "dim": 8,
                                           "heads": 2}))
    check_fusion(registry.build("fusion", {"type": "none"}), dims={"audio": 6})


@pytest.mark.parametrize(("fusion", "problem"), [
    (FlatMeanFusion(), "depends on padded positions"),
    (ConcatFusion(ConcatConfig(extra_outputs=1)), "output (4, 5), expected (4, 4)"),
    (UnusedParameterFusion(), "no finite gradient for unused.weight"),
])
def test_check_fusion_flags_contract_breaches(fusion, problem):
    with pytest.raises(AssertionError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        check_fusion(fusion)


# -- registration and end-to-end runs ---------------------------------------------------------

def test_register_component_then_run_one_cell(register_component, run_one_cell):
    plugin = register_component(ConcatFusion)
    spec = get_registry().get("fusion", "kit_concat")
    assert spec.plugin == plugin and spec.factory is ConcatFusion
    (result,) = run_one_cell(fusion="kit_concat")
    assert result["status"] == "done"
    assert result["names"] == {"text": "bert", "audio": "mfcc", "fusion": "kit_concat",
                               "approach": "direct", "protocol": None}
    assert result["fold"] == "Ses01" and result["epochs_run"] == 1
    assert set(result["metrics"]["test"]) >= {"ua", "wa", "n"}


def test_run_one_cell_reports_a_failed_job(register_component, run_one_cell):
    register_component(ExplodingFusion)
    with pytest.raises(AssertionError, match="1 of 1 jobs failed.*kit_exploding cannot be built"):
        run_one_cell(fusion="kit_exploding", text=None)
    (result,) = run_one_cell(fusion="kit_exploding", text=None, check=False)
    assert result["status"] == "failed" and "Traceback" in result["traceback"]


def test_kit_works_in_a_plain_third_party_suite(pytester):
    """No emoplug conftest: the fixtures alone register, clean up and build inputs."""
    pytester.makepyfile(test_third_party=textwrap.dedent("""
        from emoplug import Fusion
        from emoplug.registry import get_registry

        class ThirdParty(Fusion):
            name = "third_party_fusion"

        def test_registered(register_component, encoded_batch):
            register_component(ThirdParty, plugin="mine")
            assert get_registry().get("fusion", "third_party_fusion").plugin == "mine"
            assert set(encoded_batch()) == {"text", "audio"}

        def test_removed_after_the_test():
            names = get_registry().names("fusion")
            assert "third_party_fusion" not in names and "early" in names
    """))
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_component_plugin_rejects_non_components(register_component):
    with pytest.raises(TypeError, match="not a subclass of an emoplug component"):
        register_component(dict)


# -- disabling and tracing --------------------------------------------------------------------

def test_disable_plugins_by_name_in_the_cli():
    run = emoplug_cli("plugins", "--json", env={"EMOPLUG_DISABLE_PLUGINS": "fusion, approaches",
                                                "EMOPLUG_TRACE_PLUGINS": "1"})
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    assert payload["disabled"] == ["approaches", "fusion"]
    assert not listed(payload, "fusion") & BUNDLED_FUSIONS and not listed(payload, "approach")
    assert {"bert", "roberta"} <= listed(payload, "text")
    assert "emoplug-trace: plugin fusion disabled by EMOPLUG_DISABLE_PLUGINS" in run.stderr


def test_trace_prints_each_hook_call(monkeypatch, capsys):
    get_registry().names("fusion")
    assert "emoplug-trace" not in capsys.readouterr().err
    monkeypatch.setenv("EMOPLUG_TRACE_PLUGINS", "1")
    reset_registry()
    get_registry().names("fusion")
    err = capsys.readouterr().err
    assert "emoplug-trace: loaded plugin fusion (emoplug_fusion)" in err
    assert "emoplug-trace: emoplug_register_fusions() -> plugin fusion" in err
    assert "emoplug-trace: emoplug_register_datasets() -> plugin data" in err


# -- broken third-party plugins through real entry points -------------------------------------

BROKEN_MODULES = {
    "kitbroken_import": "import no_such_module_for_emoplug_tests\n",
    "kitbroken_hook": textwrap.dedent("""
        from emoplug import hookimpl

        @hookimpl
        def emoplug_register_fusions(register):
            raise RuntimeError("the hook fell over")
    """),
    "kitbroken_config": textwrap.dedent("""
        from emoplug import hookimpl

        @hookimpl
        def emoplug_register_fusions(register):
            register("odd", lambda config: None, dict)
    """),
    "kitbroken_name": textwrap.dedent("""
        from emoplug import hookimpl

        @hookimpl
        def emoplug_register_fusion(register):  # misspelt: the hook is ..._fusions
            pass
    """),
    "kitbroken_exit": "import sys\nsys.exit('this plugin quits at import')\n",
    "kitworking": textwrap.dedent("""
        from emoplug import Fusion, hookimpl

        class Working(Fusion):
            name = "kit_working"

        @hookimpl
        def emoplug_register_fusions(register):
            register(Working)
    """),
}


def make_distribution(root: Path) -> None:
    """An installed-looking distribution ``emoplug-kit-broken`` with six plugins, five of
    them broken in different ways."""
    info = root / "emoplug_kit_broken-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: emoplug-kit-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(
        "[emoplug]\nbroken_import = kitbroken_import\nbroken_hook = kitbroken_hook\n"
        "broken_config = kitbroken_config\nbroken_name = kitbroken_name\n"
        "broken_exit = kitbroken_exit\nworking = kitworking\n")
    for module, source in BROKEN_MODULES.items():
        (root / f"{module}.py").write_text(source)


def test_broken_plugins_are_named_and_do_not_take_others_down(tmp_path):
    make_distribution(tmp_path)
    run = emoplug_cli("plugins", "--json", pythonpath=tmp_path)
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    broken = {b["plugin"]: b for b in payload["broken"]}
    assert set(broken) == {"broken_import", "broken_hook", "broken_config", "broken_name",
                           "broken_exit"}
    assert all(b["distribution"] == "emoplug-kit-broken" for b in broken.values())
    assert "failed to import kitbroken_import: ModuleNotFoundError" in \
        broken["broken_import"]["error"]
    assert "emoplug_register_fusions raised RuntimeError: the hook fell over" in \
        broken["broken_hook"]["error"]
    assert "'odd': config model is not a pydantic model" in broken["broken_config"]["error"]
    assert broken["broken_name"]["error"] == (
        "implements hooks emoplug does not have: emoplug_register_fusion "
        "(did you mean emoplug_register_fusions?)")
    assert broken["broken_exit"]["error"] == (
        "failed to import kitbroken_exit: SystemExit: this plugin quits at import")
    fusions = listed(payload, "fusion")
    assert BUNDLED_FUSIONS | {"kit_working"} <= fusions and "odd" not in fusions
    working = next(c for c in payload["components"] if c["name"] == "kit_working")
    assert (working["plugin"], working["distribution"], working["version"]) == (
        "working", "emoplug-kit-broken", "0.3")

    text = emoplug_cli("plugins", pythonpath=tmp_path)
    assert text.returncode == 0
    assert "BROKEN    plugin 'broken_hook' (emoplug-kit-broken): hook emoplug_register_fusions " \
           "raised RuntimeError: the hook fell over" in text.stderr
    assert "kit_working" in text.stdout and "early" in text.stdout
    assert "BROKEN    plugin 'broken_name' (emoplug-kit-broken): implements hooks" in text.stderr
    assert "Traceback" not in text.stderr
