"""Spec validation: every rejection names the field and says how to fix it."""

from __future__ import annotations

import pytest

from orchestra.errors import SpecError
from orchestra.spec import load_spec, parse_duration


def errors_of(text: str) -> list[dict]:
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    return caught.value.errors


def locs(text: str) -> list[tuple]:
    return [tuple(e["loc"]) for e in errors_of(text)]


def test_a_valid_spec_defaults_needs_to_the_step_above():
    spec = load_spec("""
name: ok
steps:
  - {id: a, uses: "task:examples.noop"}
  - {id: b, uses: "task:examples.noop"}
  - {id: c, uses: "task:examples.noop", needs: []}
""")
    assert [s.needs for s in spec.steps] == [[], ["a"], []]


def test_duplicate_step_ids_are_refused_with_the_index_of_the_first():
    errs = errors_of("""
name: dup
steps:
  - {id: a, uses: "task:examples.noop"}
  - {id: a, uses: "task:examples.noop"}
""")
    assert errs[0]["loc"] == ["steps", 1, "id"]
    assert "already used by steps[0]" in errs[0]["msg"]


def test_unknown_needs_name_the_choices():
    errs = errors_of("""
name: needs
steps:
  - {id: a, uses: "task:examples.noop"}
  - {id: b, uses: "task:examples.noop", needs: [zz]}
""")
    assert errs[0]["loc"] == ["steps", 1, "needs", 0]
    assert "use one of: a, b" in errs[0]["msg"]


def test_cycles_are_refused():
    assert ("steps",) in locs("""
name: cyc
steps:
  - {id: a, uses: "task:examples.noop", needs: [b]}
  - {id: b, uses: "task:examples.noop", needs: [a]}
""")


def test_unknown_uses_kind_lists_the_kinds():
    errs = errors_of("name: k\nsteps: [{id: a, uses: 'ftp:files'}]")
    assert errs[0]["loc"] == ["steps", 0, "uses"]
    assert "task:<module.func>" in errs[0]["msg"]


@pytest.mark.parametrize("bad", ["5x", "-1s", "soon", True])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_duration_past_a_year_is_refused_with_the_limit():
    assert parse_duration("366d") == 366 * 86400
    with pytest.raises(ValueError, match="longer than a year"):
        parse_duration("99999999999999h")
    assert locs("name: d\nsteps: [{id: a, uses: 'task:x.y', timeout: 400d}]") == [("steps", 0, "timeout")]


def test_a_bad_duration_in_a_spec_points_at_the_field():
    assert locs("name: d\nsteps: [{id: a, uses: 'task:x.y', timeout: 10 minutes}]") == [("steps", 0, "timeout")]


def test_durations_parse_to_seconds():
    assert [parse_duration(v) for v in ("500ms", "30s", "5m", "4h", "1d", 7)] == [0.5, 30, 300, 14400, 86400, 7]


def test_templates_that_do_not_parse_are_refused():
    errs = errors_of("""
name: t
steps:
  - {id: a, uses: "task:x.y", with: {v: "{{ input.x + }}"}}
""")
    assert errs[0]["loc"] == ["steps", 0, "with", "v"]
    assert "does not parse" in errs[0]["msg"]


def test_a_condition_that_does_not_parse_is_refused():
    assert locs("name: t\nsteps: [{id: a, uses: 'task:x.y', if: 'input.x >'}]") == [("steps", 0, "if")]


def test_references_to_unknown_steps_are_refused():
    errs = errors_of("""
name: t
steps:
  - {id: a, uses: "task:x.y", with: {v: "{{ steps.nope.output }}"}}
""")
    assert "steps.nope" in errs[0]["msg"]


def test_an_input_schema_that_is_not_json_schema_is_refused():
    errs = errors_of("name: s\ninput_schema: {type: 12}\nsteps: [{id: a, uses: 'task:x.y'}]")
    assert errs[0]["loc"][0] == "input_schema"
    assert "JSON Schema" in errs[0]["msg"]


def test_connectors_must_be_declared_by_the_workflow():
    errs = errors_of("name: c\nsteps: [{id: a, uses: 'http:payments'}]")
    assert errs[0]["loc"] == ["steps", 0, "uses"]
    assert "connectors" in errs[0]["msg"]


@pytest.mark.parametrize("text", ["name: [unclosed", "just a string", "- a list"])
def test_malformed_documents_get_a_parse_error(text):
    errs = errors_of(text)
    assert errs and errs[0]["loc"] == []


def test_bad_names_and_unknown_fields_say_how_to_fix():
    errs = errors_of("name: Bad Name\nsteps: [{id: a, uses: 'task:x.y', colour: red}]")
    messages = {tuple(e["loc"]): e["msg"] for e in errs}
    assert "lowercase" in messages[("name",)]
    assert "remove it or check its spelling" in messages[("steps", 0, "colour")]


def test_a_spec_nested_too_deeply_is_refused_with_the_fix():
    with pytest.raises(SpecError) as caught:
        load_spec("name: f\nsteps: " + "[" * 20000 + "]" * 20000)
    assert "too deeply" in caught.value.errors[0]["msg"] and "flatten" in caught.value.errors[0]["msg"]


def test_an_unpaired_surrogate_in_a_spec_is_refused():
    with pytest.raises(SpecError) as caught:
        load_spec('name: f\nsteps:\n  - {id: a, uses: "task:x.y", with: {note: "\\ud800"}}\n')
    assert "unpaired UTF-16 surrogate" in caught.value.errors[0]["msg"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_yaml_nan_and_infinity_are_refused_because_json_cannot_hold_them(value):
    with pytest.raises(SpecError) as caught:
        load_spec(f"name: f\nsteps:\n  - {{id: a, uses: 'task:x.y', with: {{limit: {value}}}}}\n")
    assert "NaN or Infinity" in caught.value.errors[0]["msg"]
