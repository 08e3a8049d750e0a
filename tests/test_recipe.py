"""Recipe schema, overrides, environment variables, grid expansion and job ids."""

from __future__ import annotations

import copy

import pytest
from fakes import FULL_GRID, fake_registry

from emoplug import SettingError, TextEncoder, TextEncoderConfig, hookimpl
from emoplug.errors import RecipeError
from emoplug.recipe import apply_overrides, build_plan


def plan_of(data, registry=None):
    return build_plan(copy.deepcopy(data), "r.yaml", registry or fake_registry())


def test_full_grid_counts():
    plan = plan_of(FULL_GRID)
    counts = plan.counts()
    assert sum(c.source == "grid" for c in plan.cells) == 6 * 4 * 4 * 2
    assert counts["modalities"]["text+audio"] == 6 * 4 * 4 * 2 + 1  # + attention ablation
    assert counts["modalities"]["text"] == 6 * 2 + 1
    assert counts["modalities"]["audio"] == 4 * 2
    assert len(plan.cells) == 192 + 13 + 8 + 1
    assert plan.folds == ["S1", "S2", "S3", "S4", "S5"]
    assert len(plan.jobs) == len(plan.cells) * 5 * 3
    assert len({j.id for j in plan.jobs}) == len(plan.jobs)


def test_null_modality_in_grid_gives_single_modality_cells_once():
    data = {"name": "r", "dataset": {"type": "fakedata"}, "protocol": {"type": "fakeloso"},
            "grid": {"text": ["bert", None], "audio": ["mfcc", None],
                     "fusion": ["early", "late"], "approach": ["direct"]}}
    plan = plan_of(data)
    labels = sorted(c.label for c in plan.cells)
    assert labels == ["bert+mfcc/early/direct", "bert+mfcc/late/direct", "bert/none/direct",
                      "mfcc/none/direct"]


def test_ids_are_stable_and_ignore_data_location():
    first = [j.id for j in plan_of(FULL_GRID).jobs]
    moved = copy.deepcopy(FULL_GRID)
    moved["dataset"]["root"] = "/elsewhere"
    moved["train"] = {"save": "best"}
    assert [j.id for j in plan_of(moved).jobs] == first
    changed = copy.deepcopy(FULL_GRID)
    changed["train"] = {"epochs": 3}
    assert not set(j.id for j in plan_of(changed).jobs) & set(first)


def test_ids_known_values_do_not_drift():
    data = {"name": "r", "dataset": {"type": "fakedata", "sessions": 1},
            "protocol": {"type": "fakeloso"}, "extra": [{"text": "bert", "approach": "direct"}]}
    plan = plan_of(data)
    # a change here means every user's finished runs would be re-run: bump deliberately
    assert [j.id for j in plan.jobs] == [plan.jobs[0].id]
    assert len(plan.jobs[0].id) == 16
    assert plan_of(data).jobs[0].id == plan.jobs[0].id


def test_component_config_resolved_with_defaults():
    plan = plan_of(FULL_GRID)
    cell = next(c for c in plan.cells if c.fusion == "attention_noattn")
    assert cell.config["fusion"] == {"type": "attention", "attention": False, "heads": 4}
    assert cell.config["text"]["mode"] == "finetune"


def test_overrides_set_nested_values_and_lists():
    data = {"train": {"epochs": 10}, "seeds": [0, 1]}
    apply_overrides(data, ["train.epochs=3", "seeds=[5]", "dataset.root=/x",
                           "text.bert.pretrained=/m"], "r.yaml")
    assert data == {"train": {"epochs": 3}, "seeds": [5], "dataset": {"root": "/x"},
                    "text": {"bert": {"pretrained": "/m"}}}
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["novalue"], "r.yaml")


def test_environment_variables_expanded(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/data/iemocap")
    data = copy.deepcopy(FULL_GRID)
    data["dataset"]["root"] = "${DATA_ROOT}/full"
    data["output_dir"] = "${NOT_SET_ANYWHERE:-runs/x}"
    plan = plan_of(data)
    assert plan.dataset["root"] == "/data/iemocap/full"
    assert plan.recipe.output_dir == "runs/x"


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.update(bogus=1), "bogus: unknown key"),
    (lambda d: d["grid"]["fusion"].append("nope"), "grid.fusion[4]: unknown fusion 'nope'"),
    (lambda d: d["train"].update(epochs=-1), "train.epochs"),
    (lambda d: d["train"].update(epochs="many"), "train.epochs"),
    (lambda d: d["grid"].update(fusion=[]) or d.pop("extra"), "grid.fusion: empty list"),
    (lambda d: d["fusion"]["attention_noattn"].update(heads=0), "fusion.attention_noattn.heads"),
    (lambda d: d["dataset"].update(root="${UNSET_VARIABLE_XYZ}"),
     "dataset.root: environment variable ${UNSET_VARIABLE_XYZ} is not set"),
    (lambda d: d["extra"].append({"text": "bert", "audio": "mfcc", "fusion": "none",
                                  "approach": "direct"}), "fusion 'none' takes one modality"),
    (lambda d: d.pop("grid") and d.pop("extra"), "no cells"),
    (lambda d: d["dataset"].update(type="iemocapp"), "dataset.type: unknown dataset"),
    (lambda d: d["dataset"].update(type=["a"]), "dataset.type: a dataset type must be a name"),
    (lambda d: d.update(seeds=[-1]), "seeds[0]: Input should be greater than or equal to 0"),
])
def test_bad_recipes_name_the_field(mutate, where):
    data = copy.deepcopy(FULL_GRID)
    data["train"] = {}
    mutate(data)
    with pytest.raises(RecipeError) as err:
        plan_of(data)
    assert where in str(err.value)
    assert str(err.value).startswith("r.yaml: ")


PROTOCOLS = {"name": "r", "dataset": {"type": "fakedata"}, "protocol": {"type": "fakeloso"},
             "protocols": {"a": {"type": "fakeloso"}, "b": {"type": "fakeloso", "subset": "b"}},
             "grid": {"text": ["bert"], "audio": [None], "approach": ["direct"],
                      "protocol": ["b", "a"]}}


def test_named_protocols_run_the_same_cells_under_each():
    plan = plan_of(PROTOCOLS)
    assert [c.label for c in plan.cells] == ["bert/none/direct@b", "bert/none/direct@a"]
    assert list(plan.protocol_folds) == ["b", "a"]  # the grid's order
    assert plan.folds == []  # no cell runs under the recipe's own protocol
    assert plan.protocol_folds["a"] == ["a:S1", "a:S2", "a:S3", "a:S4", "a:S5"]
    assert {j.fold for j in plan.jobs if j.cell.protocol == "a"} == set(plan.protocol_folds["a"])
    assert len({j.id for j in plan.jobs}) == len(plan.jobs) == 2 * 5
    config = plan.jobs[0].resolved_config()
    assert config["names"]["protocol"] == "b"
    assert config["protocol"] == {"type": "fakeloso", "subset": "b"}
    assert plan.counts()["protocol"] == {"b": 1, "a": 1}


def test_a_protocol_axis_leaves_the_recipe_protocol_ids_as_they_were():
    single = {k: v for k, v in PROTOCOLS.items() if k != "protocols"}
    single["protocol"] = {"type": "fakeloso", "subset": "main"}
    single["grid"] = {**PROTOCOLS["grid"], "protocol": None}
    before = [j.id for j in plan_of(single).jobs]
    mixed = copy.deepcopy(PROTOCOLS)
    mixed["protocol"] = single["protocol"]
    mixed["extra"] = [{"text": "bert", "approach": "direct"}]  # under the recipe protocol
    plan = plan_of(mixed)
    assert [j.id for j in plan.jobs if j.cell.protocol is None] == before
    assert plan.folds == ["S1", "S2", "S3", "S4", "S5"]
    assert len(plan.all_folds) == 15


def test_unknown_protocol_name_is_a_problem_naming_the_entry():
    bad = copy.deepcopy(PROTOCOLS)
    bad["grid"]["protocol"] = ["a", "c"]
    with pytest.raises(RecipeError, match=r"grid\.protocol\[1\]: unknown protocol 'c'; "
                                          r"available: a, b"):
        plan_of(bad)
    extra = copy.deepcopy(PROTOCOLS)
    extra["extra"] = [{"text": "bert", "approach": "direct", "protocol": "zz"}]
    with pytest.raises(RecipeError, match=r"extra\[0\]\.protocol: unknown protocol 'zz'"):
        plan_of(extra)


# -- one mistake, one line; entries named as the recipe names them (issue 23) ----------------

SMALL = {"name": "r", "dataset": {"type": "fakedata"}, "protocol": {"type": "fakeloso"},
         "text": {"mine": {"type": "bert", "pretrained": "/ckpt"}},
         "grid": {"text": ["mine", "roberta"], "audio": ["mfcc", None],
                  "fusion": ["early", "late"], "approach": ["direct"]}}


def test_a_typo_in_a_grid_list_is_one_line_however_many_cells_name_it():
    data = copy.deepcopy(FULL_GRID)
    data["grid"]["approach"] = ["direkt"]
    with pytest.raises(RecipeError) as err:
        plan_of(data)
    assert err.value.problems == ["grid.approach[0]: unknown approach 'direkt' (did you mean "
                                  "'direct'?); available: direct, two_stage, two_stage_oracle"]


def test_a_key_given_twice_is_an_error_naming_the_file_and_line(tmp_path):
    from emoplug.recipe import read_yaml

    recipe = tmp_path / "dup.yaml"
    recipe.write_text("name: r\napproach:\n  direct: {type: direct}\n"
                      "  direct: {type: two_stage}\n")
    with pytest.raises(RecipeError) as err:
        read_yaml(recipe)
    assert str(err.value) == (f"{recipe}: not valid YAML: line 4, column 3: duplicate key "
                              "'direct' (first given on line 3)")
    recipe.write_text("a: {x: 1, y: 2}\nb: [{x: 1}, {x: 2}]\n")  # same keys, other mappings
    assert read_yaml(recipe) == {"a": {"x": 1, "y": 2}, "b": [{"x": 1}, {"x": 2}]}


def test_an_override_creating_an_entry_no_cell_uses_is_an_error(tmp_path):
    import yaml

    from emoplug.recipe import load_plan

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(SMALL))
    with pytest.raises(RecipeError) as err:
        load_plan(recipe, ["text.bert.pretrained=/ckpt"], fake_registry())
    assert err.value.problems == ["override 'text.bert.pretrained=/ckpt' creates text.bert, "
                                  "which no cell uses (cells use text: mine, roberta)"]
    # a new entry that a cell names (here a registered type) is used, as is an existing one
    plan = load_plan(recipe, ["text.roberta.pretrained=/ckpt", "text.mine.pretrained=/x"],
                     fake_registry())
    assert plan.components["text"]["roberta"]["pretrained"] == "/ckpt"
    whole = load_plan(recipe, ["text={mine: {type: bert}}"], fake_registry())  # a whole section
    assert list(whole.components["text"]) == ["mine"]


class CheckedConfig(TextEncoderConfig):
    pretrained: str = "ok"


class Checked(TextEncoder):
    """A text encoder whose ``check`` finds a missing checkpoint, as the bundled ones do."""

    name = "checked"
    Config = CheckedConfig

    def check(self) -> list[SettingError]:
        missing = self.config.pretrained.startswith("/missing")
        return [SettingError("pretrained", "no directory")] if missing else []


class CheckedPlugin:
    @hookimpl
    def emoplug_register_text_encoders(self, register):
        register(Checked)


def test_preflight_lines_name_the_recipe_entry_of_each_component_the_cells_use():
    from emoplug.recipe import preflight

    registry = fake_registry()
    registry.add_plugin(CheckedPlugin(), "checked")
    data = copy.deepcopy(SMALL)
    data["text"] = {"mine": {"type": "checked", "pretrained": "/missing/a"},
                    "other": {"type": "checked", "pretrained": "/missing/b"},  # in no cell
                    "fine": {"type": "checked"}}
    data["grid"]["text"] = ["mine", "fine"]
    assert preflight(plan_of(data, registry), registry) == [
        "text.mine.pretrained: no directory"]


def test_setting_errors_raised_while_building_are_placed_under_the_recipe_key():
    from emoplug.components import recipe_key

    plan = plan_of(SMALL)
    assert plan.component_key("text", plan.components["text"]["mine"]) == "text.mine"
    roberta = next(c for c in plan.cells if c.text == "roberta").config["text"]
    assert plan.component_key("text", roberta) == "text.roberta"
    with pytest.raises(SettingError) as err, recipe_key("text.mine"):
        raise SettingError("pretrained", "no directory /x")
    assert str(err.value) == "text.mine.pretrained: no directory /x"
    with pytest.raises(SettingError) as err, recipe_key("text.outer"):
        with recipe_key("text.mine"):
            raise SettingError("pretrained", "no directory /x")
    assert str(err.value) == "text.mine.pretrained: no directory /x"
