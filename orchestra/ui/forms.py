"""Decision forms generated from a human task's ``form`` JSON Schema.

``fields`` turns the schema's top-level properties into ``Field`` descriptions
the template renders (text, number, whole number, checkbox, choice, or JSON for
anything nested). ``parse`` turns the submitted form back into typed input and
reports values that are not even the right kind (``"abc"`` for a number) beside
their field. The schema itself is checked by ``orchestra.decisions.decide``;
``field_errors`` places its errors beside the fields they name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_REQUIRED = re.compile(r"'([^']+)' is a required property")
_SUFFIX = "; fix the input to match the task's form"
NON_FIELD = "__form__"  # errors that name no field are shown above the form


@dataclass(frozen=True)
class Field:
    """One input of a decision form."""

    name: str
    label: str
    kind: str  # text, textarea, email, date, number, integer, boolean, choice, json
    required: bool
    description: str = ""
    options: tuple[tuple[str, str], ...] = ()  # (submitted value, label) for choices
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None

    @property
    def param(self) -> str:
        """The submitted name; prefixed so a property cannot clash with the form's own controls."""
        return "f." + self.name

    @property
    def input_id(self) -> str:
        return "field-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)


def _kind(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "choice"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        if schema.get("format") in ("email", "date"):
            return str(schema["format"])
        return "textarea" if schema.get("maxLength", 0) > 200 or schema.get("format") == "textarea" else "text"
    if kind in ("number", "integer", "boolean"):
        return str(kind)
    return "json"


def fields(form: Mapping[str, Any] | None) -> list[Field]:
    """The inputs for a ``form`` schema, in property order."""
    if not form:
        return []
    required = set(form.get("required") or ())
    out = []
    for name, raw in (form.get("properties") or {}).items():
        schema = raw if isinstance(raw, Mapping) else {}
        kind = _kind(schema)
        options = tuple((json.dumps(v) if not isinstance(v, str) else v, str(v)) for v in schema.get("enum") or ())
        out.append(Field(name=name, label=str(schema.get("title") or name.replace("_", " ").capitalize()), kind=kind,
                         required=name in required, description=str(schema.get("description") or ""),
                         options=options, default=schema.get("default"),
                         minimum=schema.get("minimum"), maximum=schema.get("maximum"),
                         max_length=schema.get("maxLength")))
    return out


def _choice(field: Field, raw: str, form: Mapping[str, Any]) -> Any:
    for value in (form.get("properties") or {}).get(field.name, {}).get("enum") or ():
        if (value if isinstance(value, str) else json.dumps(value)) == raw:
            return value
    raise ValueError(f"choose one of: {', '.join(label for _, label in field.options)}")


def _convert(field: Field, raw: str, form: Mapping[str, Any]) -> Any:
    if field.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("enter a whole number, such as 42") from None
    if field.kind == "number":
        try:
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            raise ValueError("enter a number, such as 12.5") from None
    if field.kind == "choice":
        return _choice(field, raw, form)
    if field.kind == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"enter valid JSON ({exc.msg} at column {exc.colno})") from None
    return raw


def parse(form: Mapping[str, Any] | None, submitted: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed input from the submitted values, and ``{field: message}`` for values of the wrong kind.

    An empty optional field is left out; an unchecked checkbox is ``false``.
    """
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields(form):
        raw = submitted.get(field.param)
        if field.kind == "boolean":
            data[field.name] = raw is not None
            continue
        if raw is None or raw.strip() == "":
            if field.required:
                errors[field.name] = "this field is required; fill it in"
            continue
        try:
            data[field.name] = _convert(field, raw.strip() if field.kind != "textarea" else raw, form or {})
        except ValueError as exc:
            errors[field.name] = str(exc)
    return data, errors


def field_errors(items: list[dict[str, Any]]) -> dict[str, str]:
    """``InputError.errors`` as ``{field: message}``; errors naming no field go under ``NON_FIELD``."""
    out: dict[str, str] = {}
    for item in items:
        loc = [str(p) for p in item.get("loc") or ()]
        msg = str(item.get("msg", "")).removesuffix(_SUFFIX)
        if loc[:1] == ["input"]:
            loc = loc[1:]
        missing = _REQUIRED.match(msg)
        if not loc and missing:
            loc, msg = [missing.group(1)], "this field is required; fill it in"
        key = loc[0] if loc else NON_FIELD
        out[key] = f"{out[key]}; {msg}" if key in out else msg
    return out
