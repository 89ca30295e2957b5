"""Decision forms from a task's JSON Schema: fields, typed parsing, and errors placed beside fields."""

from __future__ import annotations

from orchestra.ui.forms import NON_FIELD, field_errors, fields, parse

FORM = {"type": "object", "required": ["amount", "reason"], "properties": {
    "reason": {"type": "string", "title": "Reason"},
    "amount": {"type": "integer", "minimum": 1},
    "ratio": {"type": "number"},
    "urgent": {"type": "boolean"},
    "channel": {"enum": ["email", "phone", 3]},
    "extra": {"type": "object"},
}}


def test_each_schema_type_becomes_its_own_kind_of_input() -> None:
    kinds = {f.name: (f.kind, f.required, f.label) for f in fields(FORM)}
    assert kinds == {"reason": ("text", True, "Reason"), "amount": ("integer", True, "Amount"),
                     "ratio": ("number", False, "Ratio"), "urgent": ("boolean", False, "Urgent"),
                     "channel": ("choice", False, "Channel"), "extra": ("json", False, "Extra")}
    assert next(f for f in fields(FORM) if f.name == "channel").options == (("email", "email"), ("phone", "phone"),
                                                                            ("3", "3"))


def test_submitted_strings_become_typed_input() -> None:
    data, errors = parse(FORM, {"f.reason": "late", "f.amount": "7", "f.ratio": "0.5", "f.urgent": "true",
                                "f.channel": "3", "f.extra": '{"a": 1}'})
    assert errors == {}
    assert data == {"reason": "late", "amount": 7, "ratio": 0.5, "urgent": True, "channel": 3, "extra": {"a": 1}}


def test_values_of_the_wrong_kind_and_missing_required_values_are_reported_per_field() -> None:
    data, errors = parse(FORM, {"f.amount": "seven", "f.ratio": "", "f.channel": "fax", "f.extra": "{"})
    assert set(errors) == {"reason", "amount", "channel", "extra"}
    assert "whole number" in errors["amount"] and "required" in errors["reason"]
    assert data == {"urgent": False}


def test_schema_errors_are_placed_beside_the_field_they_name() -> None:
    placed = field_errors([
        {"loc": ["input", "amount"], "msg": "0 is less than the minimum of 1; fix the input to match the task's form"},
        {"loc": ["input"], "msg": "'reason' is a required property; fix the input to match the task's form"},
        {"loc": ["input"], "msg": "something else"},
    ])
    assert placed == {"amount": "0 is less than the minimum of 1", "reason": "this field is required; fill it in",
                      NON_FIELD: "something else"}
