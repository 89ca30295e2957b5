"""Bad human and signal steps are refused when the spec loads, naming the field and the fix."""

from __future__ import annotations

import pytest

from orchestra.errors import SpecError
from orchestra.spec import load_spec


def _errors(with_: str, uses: str = "human") -> list[dict]:
    with pytest.raises(SpecError) as caught:
        load_spec(f"name: bad\nsteps:\n  - {{id: a, uses: {uses}, with: {with_}}}\n")
    return caught.value.errors


def test_a_human_step_without_assignees_is_refused():
    (err,) = _errors("{title: t}")
    assert err["loc"] == ["steps", 0, "with", "assignees"] and "group:leads" in err["msg"]


def test_unknown_fields_and_bad_policies_name_the_field():
    found = {tuple(e["loc"][3:]): e["msg"] for e in _errors(
        "{assignees: [a], quorum: 0, four_eyes: maybe, timeout: soon, color: red}")}
    assert "use one of" in found[("color",)]
    assert "1 or more" in found[("quorum",)]
    assert "true or false" in found[("four_eyes",)]
    assert "'soon' is not a duration" in found[("timeout",)]


def test_a_bad_escalation_chain_says_how_to_fix_it():
    found = {tuple(e["loc"][3:]): e["msg"] for e in _errors(
        "{assignees: [a], escalate: [{after: 2h, action: reject}, {after: 1h, to: [b]}, {after: 3h, action: panic},"
        " {after: 4h}]}")}
    assert "must be the last entry" in found[("escalate", 0)]
    assert "later than the entry before" in found[("escalate", 1, "after")]
    assert "use approve, reject or fail" in found[("escalate", 2, "action")]
    assert "exactly one of `to` and `action`" in found[("escalate", 3)]


def test_a_signal_needs_a_fixed_name():
    (err,) = _errors("{schema: {type: object}}", uses="signal")
    assert err["loc"] == ["steps", 0, "with", "name"]


def test_a_good_approval_loads():
    spec = load_spec("""
name: good
steps:
  - id: a
    uses: human
    with: {title: t, assignees: [group:leads], quorum: 2, four_eyes: true, timeout: 1d,
           escalate: [{after: 4h, to: [group:managers]}, {after: 24h, action: reject}]}
  - {id: b, uses: signal, with: {name: payment, timeout: 30s}}
""")
    assert [s.kind for s in spec.steps] == ["human", "signal"]
