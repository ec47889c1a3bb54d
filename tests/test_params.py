"""One params validation path: the JSON Schema compiled from a params declaration, after a thin
coercion of values typed as text; the errors name the component, the param and what is allowed."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from labelloop.errors import ConfigError, DescriptorError, json_pointer, schema_problems
from labelloop.params import coerce, params_schema, validate_config

PARAMS = [
    {"name": "n", "label": "Count", "type": "INT", "minI": 1, "maxI": 10, "mandatory": True},
    {"name": "x", "type": "DOUBLE", "minD": 0.5},
    {"name": "on", "type": "BOOLEAN"},
    {"name": "k", "type": "SELECT", "selectChoices": [{"value": 1, "label": "one"}, {"value": 2}]},
    {"name": "cols", "type": "COLUMNS", "mandatory": True},
    {"name": "tags", "type": "MAP"},
]


@pytest.mark.parametrize("ptype, text, value", [
    ("INT", "7", 7), ("INT", " 8 ", 8), ("INT", "9.0", 9), ("INT", 3.0, 3), ("INT", "2.5", "2.5"),
    ("DOUBLE", "0.25", 0.25), ("DOUBLE", 2, 2.0), ("DOUBLE", "x", "x"),
    ("BOOLEAN", "TRUE", True), ("BOOLEAN", "false", False), ("BOOLEAN", "yes", "yes"),
    ("STRINGS", "a", ["a"]), ("STRING", "7", "7"),
    ("MAP", {"a": 1, "b": None}, {"a": "1", "b": None}),
    ("KEY_VALUE_LIST", [{"from": "a", "to": "b"}, {"from": "c"}], {"a": "b", "c": None}),
])
def test_text_is_coerced_to_the_declared_type_or_left_for_the_schema(ptype, text, value):
    assert coerce({"name": "p", "type": ptype}, text) == value


def test_select_values_typed_as_text_match_their_choice():
    p = PARAMS[3]
    assert coerce(p, "2") == 2 and coerce(p, 1) == 1 and coerce(p, "3") == "3"
    assert validate_config("c", PARAMS, {"n": "3", "cols": "a", "k": "1"})["k"] == 1


def test_the_config_is_checked_against_the_compiled_schema():
    config = {"n": "4", "x": "0.75", "on": "true", "k": "2", "cols": "c1", "extra": [1]}
    out = validate_config("plug/comp", PARAMS, config)
    assert out == {"n": 4, "x": 0.75, "on": True, "k": 2, "cols": ["c1"], "extra": [1]}
    # The same schema that validate_config uses accepts the result, and is a valid schema.
    schema = params_schema(PARAMS, "plug/comp", model=out)
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid(out)
    assert schema["title"] == "config of plug/comp" and schema["required"] == ["n", "cols"]


def test_every_problem_names_the_param_and_what_is_allowed():
    with pytest.raises(ConfigError) as info:
        validate_config("plug/comp", PARAMS, {"n": "eleven", "x": 0.1, "on": "maybe", "k": 3,
                                              "cols": ["a", 2], "tags": {"t": ["x"]}})
    assert str(info.value).splitlines() == [
        "plug/comp: param 'n' (Count) must be an integer, got \"eleven\"",
        "plug/comp: param 'x' must be at least 0.5, got 0.1",
        "plug/comp: param 'on' must be true or false, got \"maybe\"",
        "plug/comp: param 'k' got 3, which is not one of the allowed values: 1 (one), 2",
        "plug/comp: param 'cols' (at /1) must be a string, got 2",
        "plug/comp: param 'tags' (at /t) must be a string (values map strings to strings), "
        "got [\"x\"]",
    ]


@pytest.mark.parametrize("empty", [None, "typed"])
def test_an_empty_mandatory_param_is_not_given(empty):
    params = [{"name": "s", "type": "STRING", "mandatory": "true"},
              {"name": "l", "type": "DATASETS", "mandatory": True},
              {"name": "m", "type": "MAP", "mandatory": True}]
    values = {"s": "", "l": [], "m": {}} if empty == "typed" else {k: None for k in "slm"}
    with pytest.raises(ConfigError) as info:
        validate_config("c", params, values)
    assert str(info.value).splitlines() == [
        "c: param 's' is mandatory but was not given (type STRING)",
        "c: param 'l' is mandatory but was not given (type DATASETS)",
        "c: param 'm' is mandatory but was not given (type MAP)",
    ]


def test_a_hidden_mandatory_param_is_not_required():
    params = [{"name": "mode", "type": "SELECT", "selectChoices": [{"value": "a"}, {"value": "b"}]},
              {"name": "path", "type": "STRING", "mandatory": True,
               "visibilityCondition": "model.mode == 'b'"}]
    assert validate_config("c", params, {"mode": "a"}) == {"mode": "a"}
    with pytest.raises(ConfigError, match="'path' is mandatory"):
        validate_config("c", params, {"mode": "b"})
    assert "required" not in params_schema(params)  # without a config it may be hidden


def test_the_error_formatter_gives_pointer_and_reason():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {
        "type": "integer", "minimum": 0}}}, "additionalProperties": False}
    errors = list(Draft202012Validator(schema).iter_errors({"a": [1, -2], "b/c": 1}))
    problems = sorted(schema_problems(errors), key=str)
    assert problems == [(("a", 1), "must be at least 0, got -2"),
                        (("b/c",), "unknown key 'b/c'; allowed keys: a")]
    assert json_pointer(("b/c", "~x", 0)) == "/b~1c/~0x/0"
    assert str(DescriptorError("f.json", "bad", pointer="")) == "f.json, at /: bad"
