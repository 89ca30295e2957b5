"""Whether a value can be stored as JSON on every database. Pure: the spec and the CLI use it without a database."""

from __future__ import annotations

import json
from typing import Any


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored in a JSON column on every database, phrased with its fix; None if it can."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return "an unpaired UTF-16 surrogate (such as \\ud800), which is not Unicode text; send valid text"
    except ValueError:
        return "NaN or Infinity, which JSON does not allow; send a number, a string or null"
    except RecursionError:
        return "values nested too deeply to store; flatten them"
    return None
