"""Templates keep native types and run sandboxed."""

from __future__ import annotations

import pytest

from orchestra.errors import TemplateError
from orchestra.templates import evaluate, render, step_references

CTX = {"input": {"amount": 120, "items": [1, 2], "name": "Ann"}, "steps": {"a": {"output": {"rows": [{"v": 3}]}}},
       "item": None, "run": {"id": "r1"}}


def test_a_single_expression_keeps_its_native_type():
    assert render("{{ input.amount }}", CTX) == 120
    assert render({"x": ["{{ input.items }}"]}, CTX) == {"x": [[1, 2]]}


def test_mixed_text_renders_as_a_string():
    assert render("Hi {{ input.name }}, {{ input.amount }}", CTX) == "Hi Ann, 120"


def test_data_keys_win_over_dict_methods():
    assert evaluate("input.items", CTX) == [1, 2]


def test_conditions_evaluate_to_values():
    assert evaluate("steps.a.output.rows[0].v > 2", CTX) is True


def test_undefined_names_raise_a_template_error_naming_the_expression():
    with pytest.raises(TemplateError, match="input.nope"):
        render("{{ input.nope.deeper }}", CTX)


def test_the_sandbox_refuses_python_internals():
    with pytest.raises(TemplateError):
        evaluate("input.__class__.__mro__[1].__subclasses__()", CTX)


def test_step_references_are_found_in_templates_and_expressions():
    assert step_references({"a": "{{ steps.x.output }}", "b": ["{{ steps['y'].output }}"]}) == {"x", "y"}
    assert step_references("steps.z.output > 1", expression=True) == {"z"}
