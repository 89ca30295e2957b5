"""Spec validation: every rejection names the field and says how to fix it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

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


# Nine distinct problems, structural and graph-wide, in one spec; `orchestra validate` showed 2, then 7 more.
NINE_PROBLEMS = """
name: nine
connectors: [orders, ghost]                        # 1. ghost is not declared in config/connectors.yaml
steps:
  - {id: lookup, uses: "task:examples.normalize", with: {text: "{{ input.message }}"}}
  - {id: lookup, uses: "task:examples.noop"}          # 2. a second step with the same id
  - {id: score, uses: "task:examples.nosuch"}         # 3. no such step function
  - {id: late, uses: "task:examples.noop", timeout: 5 parsecs}   # 4. not a duration
  - {id: fetch, uses: "http:orders", needs: [ghost_step], with: {method: GET, body: "x"}}  # 5. unknown need, 6. no field body
  - {id: refund, uses: "http:payments"}               # 7. payments is not in this workflow's connectors
  - {id: left, uses: "task:examples.noop", needs: [right], with: {text: "{{ input.message "}}  # 8. does not parse
  - {id: right, uses: "task:examples.noop", needs: [left]}     # 9. left and right form a cycle
"""
NINE = {
    ("connectors", 1): ("unknown_connector", "ghost"),
    ("steps", 1, "id"): ("duplicate", "lookup"),
    ("steps", 2, "uses"): ("unknown_task", "nosuch"),
    ("steps", 3, "timeout"): ("value_error", "parsecs"),
    ("steps", 4, "needs", 0): ("unknown_step", "ghost_step"),
    ("steps", 4, "with", "body"): ("extra_forbidden", "body"),
    ("steps", 5, "uses"): ("connector_not_allowed", "payments"),
    ("steps", 6, "with", "text"): ("template", "does not parse"),
    ("steps",): ("cycle", "left"),
}


def assert_nine(errors: list[dict]) -> None:
    found = {tuple(e["loc"]): (e["type"], e["msg"]) for e in errors}
    assert sorted(found, key=str) == sorted(NINE, key=str), errors
    for loc, (kind, word) in NINE.items():
        assert found[loc][0] == kind and word in found[loc][1], (loc, found[loc])


def test_nine_problems_come_back_in_one_pass_with_tasks_and_connectors_resolved():
    from orchestra.workflows import check_workflow

    spec, errors = check_workflow(NINE_PROBLEMS, connectors=["crm", "llm", "orders", "payments"])
    assert spec is None
    assert_nine(errors)


def test_validate_json_prints_all_nine_problems_of_the_spec_in_one_call(tmp_path):
    from tests.orchestra.test_cli import cli

    path = tmp_path / "nine.yaml"
    path.write_text(NINE_PROBLEMS)
    result = cli("validate", str(path), "--json")
    assert result.returncode == 1, result.stderr
    assert_nine(json.loads(result.stdout))
    shown = cli("validate", str(path))
    assert shown.returncode == 1 and "has 9 problems" in shown.stderr, shown.stderr


def test_post_v1_workflows_answers_422_with_every_problem_at_once():
    from fastapi.testclient import TestClient

    from orchestra.api import create_app
    from orchestra.auth import create_key

    token = create_key(f"spec-admin-{uuid.uuid4().hex[:6]}", "admin")
    with TestClient(create_app()) as api:
        answer = api.post("/v1/workflows", content=NINE_PROBLEMS, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/yaml"})
    assert answer.status_code == 422
    # The API registers what the workers will run; connectors are declared per process, so config/connectors.yaml
    # is checked by `orchestra validate` only. The other eight come back together.
    expected = {loc for loc in NINE if loc != ("connectors", 1)}
    assert {tuple(e["loc"]) for e in answer.json()["errors"]} == expected, answer.json()


@pytest.mark.parametrize(("uses", "fix"), [
    ("task:examples.nosuch", "tasks/examples.py has no step function 'nosuch'; define `@orchestra.step def nosuch"),
    ("task:nomodule.fn", "no module 'nomodule' for 'task:nomodule.fn': create tasks/nomodule.py"),
    ("task:examples.re", "tasks/examples.py has no step function 're'"),
    ("task:examples", "names no module; write task:<module>.<function>"),
])
def test_a_task_that_does_not_resolve_is_refused_at_registration_naming_the_fix(uses, fix):
    from orchestra.workflows import register_workflow

    with pytest.raises(SpecError) as caught:
        register_workflow(f"name: unresolved\nsteps:\n  - {{id: a, uses: '{uses}'}}\n")
    assert [(e["loc"], e["type"]) for e in caught.value.errors] == [(["steps", 0, "uses"], "unknown_task")]
    assert fix in caught.value.errors[0]["msg"]


def test_a_spec_that_fixes_its_problems_validates_clean_the_second_time():
    from orchestra.workflows import check_workflow

    spec, errors = check_workflow("""
name: fixed
connectors: [orders]
steps:
  - {id: lookup, uses: "task:examples.normalize", with: {text: "{{ input.message }}"}}
  - {id: fetch, uses: "http:orders", with: {method: GET, path: /orders}}
""", connectors=["orders"])
    assert errors == [] and spec is not None and spec.name == "fixed"


def test_import_orchestra_spec_loads_no_database_broker_or_http_library():
    code = ("import sys, orchestra.spec; "
            "print(' '.join(m for m in ('sqlalchemy', 'httpx', 'redis', 'celery', 'kombu') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == []
    assert "sqlalchemy" in subprocess.run(  # the check itself sees a heavy import when there is one
        [sys.executable, "-c", code.replace("orchestra.spec", "orchestra.models")],
        capture_output=True, text=True, check=True).stdout.split()
