"""Descriptor loading, schema errors, DSS normalisation, params schemas and config validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from labelloop.descriptors import (
    KINDS,
    descriptor_errors,
    load_descriptor,
    load_json,
    params_schema,
    schema_for,
    validate_config,
    validate_descriptor,
)
from labelloop.errors import ConfigError, DescriptorError

DESIGN_PROJECT = {
    "key": "DIGITS",
    "datasets": {"unlabeled": {}, "labels": {}, "metadata": {}, "queries": {}},
    "folders": {"images": {"path": "images"}},
    "models": {"classifier": {}},
    "recipes": {
        "train": {"type": "ml-assisted-labeling/train-classifier",
                  "inputs": {"labels": ["labels"], "folder": ["images"]},
                  "outputs": {"model": ["classifier"]}, "params": {}},
        "sample": {"type": "ml-assisted-labeling/query-sampler",
                   "inputs": {"saved_model": ["classifier"], "unlabeled_samples": ["images"]},
                   "outputs": {"queries": ["queries"]}, "params": {"strategy": "margin"}},
    },
    "webapps": {"label-digits": {"type": "ml-assisted-labeling/image-labeling", "params": {}}},
    "scenarios": {"active-learning": {
        "triggers": [{"type": "ml-assisted-labeling/every-n-labelings",
                      "params": {"i_labeling_count": 20, "ds_metadata": "metadata",
                                 "ds_queries": "queries"}}],
        "steps": [{"recipe": "train"}, {"recipe": "sample"},
                  {"step": "ml-assisted-labeling/labeling-metrics", "params": {}}]}},
}

RECIPE = {
    "meta": {"label": "Query sampler", "description": "Scores the pool", "icon": "icon-gears"},
    "kind": "PYTHON",
    "selectableFromDataset": "unlabeled_samples",
    "inputRoles": [
        {"name": "saved_model", "label": "Classifier", "acceptsDataset": "false",
         "acceptsSavedModel": "true"},
        {"name": "unlabeled_samples", "arity": "NARY", "required": True,
         "acceptsManagedFolder": True},
    ],
    "outputRoles": [{"name": "queries", "label": "Queries"}],
    "params": [
        {"type": "SEPARATOR", "label": "Sampling"},
        {"name": "strategy", "label": "Query strategy", "type": "SELECT",
         "selectChoices": [{"value": "confidence", "label": "Least confidence"},
                           {"value": "margin", "label": "Margin"},
                           {"value": "entropy", "label": "Entropy"}],
         "defaultValue": "confidence", "mandatory": "true"},
        {"name": "batch", "type": "INT", "minI": 1, "maxI": 1000, "defaultValue": 20},
        {"name": "notes", "type": "TEXTAREA", "futureDssKey": {"kept": True}},
    ],
    "someOtherDssKey": [1, 2],
}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) if not isinstance(data, str) else data)
    return path


# --- loading and schema errors ---------------------------------------------------------------


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "custom-recipes/r/recipe.json", '{\n  "meta": {},\n  "kind": PYTHON\n}')
    with pytest.raises(DescriptorError) as info:
        load_json(path)
    err = info.value
    assert err.line == 3
    assert str(path) in str(err)
    assert "line 3" in str(err) and "column" in str(err) and "invalid JSON" in str(err)


def test_missing_file_is_a_descriptor_error(tmp_path):
    with pytest.raises(DescriptorError, match="cannot read"):
        load_json(tmp_path / "nope.json")


def test_every_packaged_schema_is_valid_and_self_contained():
    for kind in KINDS:
        schema = schema_for(kind)
        Draft202012Validator.check_schema(schema)
        assert "common.json" not in json.dumps(schema)
        Draft202012Validator(schema).is_valid({})  # resolves every $ref without a registry


def test_unknown_param_type_names_file_pointer_and_allowed_types(tmp_path):
    data = {"meta": {"label": "x"}, "params": [
        {"name": "a", "type": "STRING"}, {"name": "b", "type": "INT"},
        {"name": "c", "type": "BOOLEAN"}, {"name": "d", "type": "INTEGER"}]}
    path = write(tmp_path / "webapps/x/webapp.json", data)
    with pytest.raises(DescriptorError) as info:
        load_descriptor("webapp", path)
    err = info.value
    assert err.pointer == "/params/3/type"
    message = str(err)
    assert message.startswith(f"{path}, at /params/3/type: ")
    assert "INTEGER" in message and "allowed param types" in message
    assert "STRING, TEXTAREA" in message and "SEPARATOR" in message


def test_missing_name_is_reported_at_the_param(tmp_path):
    errors = descriptor_errors("recipe", {"params": [{"type": "STRING"}]}, "recipe.json")
    assert [(e.pointer, e.reason) for e in errors] == [("/params/0", "'name' is required")]
    assert str(errors[0]) == "recipe.json, at /params/0: 'name' is required"


def test_separator_without_name_is_accepted(tmp_path):
    path = write(tmp_path / "r/recipe.json", RECIPE)
    assert load_descriptor("recipe", path)["params"][0] == {"type": "SEPARATOR", "label": "Sampling"}


def test_all_errors_are_listed_sorted_and_first_one_raised_with_count():
    data = {"params": [{"name": "a", "type": "X"}, {"name": "b", "type": "INT", "minI": "1"}],
            "inputRoles": [{"label": "no name"}]}
    errors = descriptor_errors("recipe", data, "r.json")
    assert [e.pointer for e in errors] == ["/inputRoles/0", "/params/0/type", "/params/1/minI"]
    with pytest.raises(DescriptorError) as info:
        validate_descriptor("recipe", data, "r.json")
    assert info.value.pointer == "/inputRoles/0"
    assert "and 2 more problems" in str(info.value)
    assert len(info.value.errors) == 3


def test_pointers_sort_numerically():
    data = {"params": [{"name": f"p{i}", "type": "STRING"} for i in range(12)]}
    data["params"][2]["type"] = "BAD"
    data["params"][10]["type"] = "BAD"
    assert [e.pointer for e in descriptor_errors("step", data, "s.json")] == [
        "/params/2/type", "/params/10/type"]


def test_dss_string_flags_are_accepted_and_normalised(tmp_path):
    webapp = {"meta": {"label": "Image labeling"}, "baseType": "BOKEH", "hasBackend": "true",
              "noJSSecurity": "false", "standardWebAppLibraries": None, "dataType": "image",
              "params": [{"name": "folder", "type": "MANAGED_FOLDER", "mandatory": "true"}]}
    path = write(tmp_path / "webapps/image/webapp.json", webapp)
    loaded = load_descriptor("webapp", path)
    assert loaded["hasBackend"] is True and loaded["noJSSecurity"] is False
    assert loaded["params"][0]["mandatory"] is True
    assert webapp["hasBackend"] == "true"  # the input is not mutated


def test_role_defaults_applied_and_extra_keys_kept():
    out = validate_descriptor("recipe", RECIPE, "recipe.json")
    model, pool = out["inputRoles"]
    assert model == {"name": "saved_model", "label": "Classifier", "arity": "UNARY",
                     "required": False, "acceptsDataset": False, "acceptsManagedFolder": False,
                     "acceptsSavedModel": True}
    assert pool["arity"] == "NARY" and pool["required"] is True and pool["acceptsDataset"] is True
    assert out["someOtherDssKey"] == [1, 2]
    assert out["params"][3]["futureDssKey"] == {"kept": True}
    assert "arity" not in RECIPE["outputRoles"][0]


def test_bad_flag_value_is_explained():
    errors = descriptor_errors("webapp", {"hasBackend": "yes"}, "w.json")
    assert errors[0].pointer == "/hasBackend"
    assert 'true or false' in errors[0].reason and '"yes"' in errors[0].reason


def test_semantic_param_checks():
    data = {"params": [
        {"name": "a", "type": "STRING"},
        {"name": "a", "type": "INT"},
        {"name": "s", "type": "SELECT"},
        {"name": "m", "type": "MULTISELECT", "selectChoices": [{"value": "x"}], "defaultValue": ["y"]},
        {"name": "n", "type": "INT", "minI": 5, "maxI": 1},
        {"name": "d", "type": "DOUBLE", "minD": 0, "maxD": 1, "defaultValue": 2.5},
        {"name": "c", "type": "SELECT", "selectChoices": [{"value": "x"}], "defaultValue": "z"},
    ], "outputRoles": [{"name": "out"}, {"name": "out"}]}
    got = {(e.pointer, e.reason) for e in descriptor_errors("recipe", data, "r.json")}
    pointers = sorted(p for p, _ in got)
    assert pointers == sorted(["/params/1/name", "/params/2", "/params/3/defaultValue", "/params/4",
                               "/params/5/defaultValue", "/params/6/defaultValue",
                               "/outputRoles/1/name"])
    reasons = " | ".join(r for _, r in got)
    assert "duplicate param name 'a' (first used at /params/0)" in reasons
    assert "duplicate role name 'out'" in reasons
    assert "needs 'selectChoices'" in reasons
    assert "minI (5) is greater than maxI (1)" in reasons
    assert "between 0 and 1" in reasons


def test_duplicate_param_names_rejected(tmp_path):
    path = write(tmp_path / "python-steps/s/step.json",
                 {"meta": {"label": "s"}, "params": [{"name": "x", "type": "STRING"},
                                                     {"name": "x", "type": "STRING"}]})
    with pytest.raises(DescriptorError, match="duplicate param name 'x'") as info:
        load_descriptor("step", path)
    assert info.value.pointer == "/params/1/name"


def test_plugin_json():
    ok = {"id": "ml-assisted-labeling", "version": "1.0.0",
          "meta": {"label": "ML-assisted Labeling", "tags": ["Labeling"]},
          "hooks": ["labeling.hooks"], "anythingElse": 1}
    assert validate_descriptor("plugin", ok, "plugin.json")["id"] == "ml-assisted-labeling"
    errors = descriptor_errors("plugin", {"id": "Bad Id", "meta": {}, "hooks": ["no-dash"]},
                               "plugin.json")
    assert [e.pointer for e in errors] == ["/hooks/0", "/id", "/meta"]
    assert "lowercase" in errors[1].reason
    assert errors[2].reason == "'label' is required"
    assert descriptor_errors("plugin", {}, "p.json")[0].reason == "'id' is required"


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown descriptor kind"):
        schema_for("dataset")


# --- project.json ----------------------------------------------------------------------------


def test_design_project_json_passes(tmp_path):
    path = write(tmp_path / "project.json", DESIGN_PROJECT)
    assert load_descriptor("project", path) == DESIGN_PROJECT


def test_project_optional_sections_and_single_name_bindings():
    data = {"key": "P_1", "description": "d", "plugin_dirs": ["../plugins"],
            "variables": {"session": 0, "nested": {"a": [1]}}, "auth": {"tokens": {"t": "alice"}},
            "settings": {"anything": True},
            "recipes": {"r": {"type": "p/c", "inputs": {"in": "ds"}, "outputs": {"out": ["o1", "o2"]}}},
            "scenarios": {"s": {"active": False, "triggers": [], "steps": [
                {"build": "o1", "name": "build it"}, {"recipe": "r"}]}}}
    out = validate_descriptor("project", data, "project.json")
    assert out["recipes"]["r"]["inputs"] == {"in": ["ds"]}
    assert data["recipes"]["r"]["inputs"] == {"in": "ds"}


def test_project_unknown_top_level_key_fails_with_pointer(tmp_path):
    path = write(tmp_path / "project.json", {**DESIGN_PROJECT, "datasest": {}})
    with pytest.raises(DescriptorError) as info:
        load_descriptor("project", path)
    assert info.value.pointer == "/datasest"
    assert "unknown key 'datasest'" in str(info.value)
    assert "did you mean 'datasets'" in str(info.value)


def test_project_bad_step_forms_fail_with_pointers():
    project = json.loads(json.dumps(DESIGN_PROJECT))
    project["scenarios"]["active-learning"]["steps"] = [
        {"recipe": "train"}, {"run": "train"}, {"recipe": "train", "build": "labels"},
        {"step": "no-slash"}, {"recipe": "missing"}]
    errors = descriptor_errors("project", project, "project.json")
    by_pointer = {e.pointer: e.reason for e in errors}
    base = "/scenarios/active-learning/steps"
    assert sorted(by_pointer) == [f"{base}/1", f"{base}/2", f"{base}/3/step", f"{base}/4/recipe"]
    assert '{"recipe": NAME}' in by_pointer[f"{base}/1"]
    assert '{"build": DATASET}' in by_pointer[f"{base}/1"] and "'run'" in by_pointer[f"{base}/1"]
    assert "exactly one" in by_pointer[f"{base}/2"]
    assert "plugin-id/component-id" in by_pointer[f"{base}/3/step"]
    assert "unknown recipe 'missing'" in by_pointer[f"{base}/4/recipe"]


def test_project_names_and_required_fields():
    data = {"key": "has space", "datasets": {"bad name": {}}, "folders": {"f": {}},
            "webapps": {"w": {"params": {}}}, "recipes": {"r": {"type": "p/c", "inptus": {}}}}
    by_pointer = {e.pointer: e.reason for e in descriptor_errors("project", data, "project.json")}
    assert set(by_pointer) == {"/key", "/datasets/bad name", "/folders/f", "/webapps/w",
                               "/recipes/r/inptus"}
    assert "not a valid name" in by_pointer["/datasets/bad name"]
    assert by_pointer["/folders/f"] == "'path' is required"
    assert by_pointer["/webapps/w"] == "'type' is required"
    assert "did you mean 'inputs'" in by_pointer["/recipes/r/inptus"]
    assert descriptor_errors("project", {}, "p.json")[0].reason == "'key' is required"


# --- params_schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("ptype, good, bad", [
    ("STRING", "a", 1), ("TEXTAREA", "a\nb", []), ("COLUMN", "c", 2), ("DATASET", "d", {}),
    ("FOLDER", "f", 1), ("MANAGED_FOLDER", "f", 1), ("SAVED_MODEL", "m", 1),
    ("STRINGS", ["a", "b"], "a"), ("COLUMNS", ["a"], [1]), ("DATASETS", ["d"], "x"),
    ("INT", 3, 2.5), ("DOUBLE", 0.5, "0.5"), ("BOOLEAN", True, "true"),
    ("MAP", {"a": "b"}, {"a": 1}),
    ("KEY_VALUE_LIST", {"a": "b", "c": None}, "a=b"),
    ("KEY_VALUE_LIST", [{"from": "a", "to": "b"}], [{"to": "b"}]),
])
def test_params_schema_types(ptype, good, bad):
    schema = params_schema([{"name": "p", "type": ptype, "mandatory": True}], "plug/comp")
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"p": good})
    assert not validator.is_valid({"p": bad})
    assert schema["required"] == ["p"] and schema["additionalProperties"] is True
    assert validator.is_valid({"p": good, "extra": 1})


def test_params_schema_select_ranges_defaults_and_separator():
    params = [
        {"type": "SEPARATOR", "label": "Section"},
        {"name": "s", "type": "SELECT", "label": "Strategy", "mandatory": True,
         "selectChoices": [{"value": "a"}, {"value": "b"}]},
        {"name": "m", "type": "MULTISELECT", "selectChoices": [{"value": "a"}, {"value": "b"}]},
        {"name": "i", "type": "INT", "minI": 1, "maxI": 5, "defaultValue": 2, "mandatory": True},
        {"name": "d", "type": "DOUBLE", "minD": 0.0, "maxD": 1.0},
        {"name": "h", "type": "STRING", "mandatory": True, "visibilityCondition": "model.s == 'a'"},
    ]
    schema = params_schema(params)
    props = schema["properties"]
    assert list(props) == ["s", "m", "i", "d", "h"]
    assert props["s"]["enum"] == ["a", "b"] and props["s"]["title"] == "Strategy"
    assert props["m"]["items"]["enum"] == ["a", "b"]
    assert (props["i"]["minimum"], props["i"]["maximum"], props["i"]["default"]) == (1, 5, 2)
    assert (props["d"]["minimum"], props["d"]["maximum"]) == (0.0, 1.0)
    assert schema["required"] == ["s"]  # i has a default, h may be hidden
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"s": "a", "m": ["b"], "i": 5, "d": None})
    assert not validator.is_valid({"s": "c"})
    assert not validator.is_valid({"s": "a", "i": 6})
    assert not validator.is_valid({"s": "a", "m": ["c"]})


# --- validate_config -------------------------------------------------------------------------

PARAMS = [
    {"type": "SEPARATOR", "label": "Sampling"},
    {"name": "strategy", "label": "Query strategy", "type": "SELECT", "mandatory": True,
     "selectChoices": [{"value": "confidence", "label": "Least confidence"},
                       {"value": "margin", "label": "Margin"}],
     "defaultValue": "confidence"},
    {"name": "count", "label": "Labelings", "type": "INT", "minI": 1, "maxI": 100, "defaultValue": 20},
    {"name": "ratio", "type": "DOUBLE", "minD": 0, "maxD": 1},
    {"name": "al", "type": "BOOLEAN", "defaultValue": False},
    {"name": "queries", "label": "Queries dataset", "type": "DATASET", "mandatory": True,
     "visibilityCondition": "model.al"},
    {"name": "categories", "type": "KEY_VALUE_LIST", "defaultValue": []},
    {"name": "cols", "type": "COLUMNS"},
]


def test_validate_config_applies_defaults_and_coerces():
    given = {"count": 3.0, "ratio": "0.5", "al": "false", "extra": {"kept": 1},
             "categories": [{"from": "cat", "to": "Cat"}, {"from": "dog", "to": ""},
                            {"from": "bird"}]}
    out = validate_config("lab/query-sampler", PARAMS, given)
    assert out == {"strategy": "confidence", "count": 3, "ratio": 0.5, "al": False,
                   "extra": {"kept": 1},
                   "categories": {"cat": "Cat", "dog": "", "bird": None}}
    assert isinstance(out["count"], int) and list(out["categories"]) == ["cat", "dog", "bird"]
    assert given["count"] == 3.0 and isinstance(given["categories"], list)  # input untouched


def test_validate_config_more_coercions_and_fresh_defaults():
    out = validate_config("c", PARAMS, {"count": "7", "ratio": 1, "al": "true", "queries": "q",
                                        "strategy": "margin"})
    assert out["count"] == 7 and out["ratio"] == 1.0 and isinstance(out["ratio"], float)
    assert out["al"] is True and out["categories"] == {}
    params = [{"name": "tags", "type": "STRINGS", "defaultValue": ["a"]}]
    first = validate_config("c", params, None)
    first["tags"].append("b")
    assert validate_config("c", params, {})["tags"] == ["a"]  # defaults are deep-copied
    assert validate_config("c", params, {"tags": None}) == {"tags": ["a"]}


def test_unknown_select_value_names_component_param_and_allowed_values():
    with pytest.raises(ConfigError) as info:
        validate_config("ml-assisted-labeling/query-sampler", PARAMS, {"strategy": "entropyy"})
    message = str(info.value)
    assert "ml-assisted-labeling/query-sampler" in message
    assert "'strategy' (Query strategy)" in message
    assert '"entropyy"' in message
    assert '"confidence" (Least confidence)' in message and '"margin" (Margin)' in message


def test_out_of_range_and_wrong_type_and_missing_listed_together():
    with pytest.raises(ConfigError) as info:
        validate_config("comp", PARAMS, {"count": 500, "ratio": "half", "al": True, "cols": 3})
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert all(line.startswith("comp: param ") for line in lines)
    text = str(info.value)
    assert "'count' (Labelings) must be between 1 and 100, got 500" in text
    assert "'ratio' must be a number, got \"half\"" in text
    assert "'cols' must be a list of strings, got 3" in text
    assert "'queries' (Queries dataset) is mandatory but was not given" in text


def test_visibility_condition_hides_mandatory_param():
    assert "queries" not in validate_config("c", PARAMS, {"al": False})
    with pytest.raises(ConfigError, match="'queries'"):
        validate_config("c", PARAMS, {"al": True})


@pytest.mark.parametrize("condition, model, visible", [
    ("model.mode == 'a'", {"mode": "a"}, True),
    ("model.mode == 'a'", {"mode": "b"}, False),
    ('model.mode != "a"', {"mode": "a"}, False),
    ("model.flag", {}, False),
    ("!model.flag", {}, True),
    ("model.flag && model.mode == 'a'", {"flag": True, "mode": "b"}, False),
    ("model.flag || model.mode === 'a'", {"flag": False, "mode": "a"}, True),
    ("(model.flag || model.x) && !model.y", {"x": "v"}, True),
    ("model.n == 3", {"n": 3}, True),
    ("model.list.length > 0", {}, True),  # not understood: the param stays visible
    ("__import__('os')", {}, True),
])
def test_visibility_evaluator(condition, model, visible):
    # Only p is declared; the other model keys are kept as-is, as unknown config keys are.
    params = [{"name": "p", "type": "STRING", "mandatory": True, "visibilityCondition": condition}]
    if visible:
        with pytest.raises(ConfigError, match="mandatory"):
            validate_config("c", params, model)
    else:
        assert validate_config("c", params, model) == model


def test_config_must_be_an_object():
    with pytest.raises(ConfigError, match="comp: the config must be an object"):
        validate_config("comp", PARAMS, ["x"])  # type: ignore[arg-type]


def test_multiselect_and_key_value_list_errors():
    params = [{"name": "m", "type": "MULTISELECT", "selectChoices": [{"value": "a"}, {"value": "b"}]},
              {"name": "kv", "type": "KEY_VALUE_LIST"}]
    assert validate_config("c", params, {"m": "a", "kv": {"x": 1}}) == {"m": ["a"], "kv": {"x": "1"}}
    with pytest.raises(ConfigError) as info:
        validate_config("c", params, {"m": ["a", "z"], "kv": "x=y"})
    assert '"z"' in str(info.value) and '"a", "b"' in str(info.value)
    assert '{"from": key, "to": value}' in str(info.value)
