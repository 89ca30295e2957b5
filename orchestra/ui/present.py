"""How the pages show things: times, durations, the step timeline and structured values.

Times are rendered in UTC (what a page without JavaScript shows); ``orchestra.js``
rewrites each ``<time data-local>`` into the browser's zone and keeps UTC in the
hover title.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from markupsafe import Markup

LONG_TEXT = 240  # characters after which a value is folded behind "show all"
MAX_DEPTH = 4  # deeper values are shown as JSON


def moment(value: str | datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime."""
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def when(value: str | datetime | None, ms: bool = False) -> str:
    """A timestamp as ``2024-05-01 12:00:03 UTC``, or with milliseconds: ``12:00:03.120 UTC``."""
    at = moment(value)
    if at is None:
        return "—"
    text = at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{at.microsecond // 1000:03d} UTC" if ms else f"{text} UTC"


def timestamp(value: str | datetime | None, ms: bool = False) -> Markup:
    """A ``<time>`` the browser shows in its own zone, with UTC on hover."""
    at = moment(value)
    if at is None:
        return Markup("—")
    utc = when(at, ms)
    return Markup('<time datetime="{}" title="{}" data-local{}>{}</time>').format(
        at.isoformat(), utc, Markup(' data-ms') if ms else Markup(""), utc)


def until(value: str | datetime | None) -> str:
    """How long until ``value``: ``in 3h 59m``, or ``2m ago`` once it has passed."""
    at = moment(value)
    if at is None:
        return ""
    seconds = int((at - datetime.now(timezone.utc)).total_seconds())
    span, minutes = abs(seconds), abs(seconds) // 60
    text = f"{span}s" if span < 60 else f"{minutes // 60}h {minutes % 60}m" if minutes >= 60 else f"{minutes}m"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def span(seconds: float) -> str:
    """A duration as a person reads it: ``350 ms``, ``4.2 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours == 0:
        return f"{minutes} min {whole % 60} s"
    if days == 0:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def duration(start: str | datetime | None, end: str | datetime | None = None) -> str:
    """From ``start`` to ``end`` (or to now, while it goes on); empty before it started."""
    begun = moment(start)
    if begun is None:
        return ""
    return span(((moment(end) or datetime.now(timezone.utc)) - begun).total_seconds())


@dataclass(frozen=True)
class Lane:
    """One step on the run's timeline: where its bar starts and how wide it is, in percent of the run."""

    step: Mapping[str, Any]
    left: float
    width: float
    took: str


def timeline(steps: Sequence[Mapping[str, Any]]) -> list[list[Lane]]:
    """Steps in the order they started, grouped: a step that started while another ran joins its group.

    Steps that have not started follow in spec order, one to a group.
    """
    now = datetime.now(timezone.utc)
    spans = sorted(((begun, moment(s.get("finished_at")) or now, s) for s in steps
                    if (begun := moment(s.get("started_at"))) is not None), key=lambda t: t[0])
    waiting = [[Lane(s, 0.0, 0.0, "")] for s in steps if not s.get("started_at")]
    if not spans:
        return waiting
    first, last = spans[0][0], max(end for _, end, _ in spans)
    whole = max((last - first).total_seconds(), 1e-3)
    groups: list[list[Lane]] = []
    group_end = first
    for begun, ended, step in spans:
        lane = Lane(step, round((begun - first).total_seconds() / whole * 100, 2),
                    round(max((ended - begun).total_seconds() / whole * 100, 0.8), 2),
                    duration(begun, step.get("finished_at")))
        if groups and begun < group_end:
            groups[-1].append(lane)
            group_end = max(group_end, ended)
        else:
            groups.append([lane])
            group_end = ended
    return groups + waiting


def _text(value: Any) -> Markup:
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(shown) <= LONG_TEXT:
        return Markup('<span class="v">{}</span>').format(shown)
    return Markup('<details class="long"><summary>{}… <span class="muted">(show all {:,} characters)</span>'
                  '</summary><div class="v">{}</div></details>').format(shown[:LONG_TEXT], len(shown), shown)


def structured(value: Any, depth: int = 0) -> Markup:
    """``value`` as a definition list for objects, a list for arrays, wrapped text for the rest."""
    if value is None:
        return Markup('<span class="muted">none</span>')
    if depth >= MAX_DEPTH and isinstance(value, (Mapping, list)):
        return Markup('<pre class="v">{}</pre>').format(pretty(value))
    if isinstance(value, Mapping):
        if not value:
            return Markup('<span class="muted">nothing</span>')
        items = Markup("").join(Markup("<div><dt>{}</dt><dd>{}</dd></div>").format(k, structured(v, depth + 1))
                                for k, v in value.items())
        return Markup('<dl class="kv">{}</dl>').format(items)
    if isinstance(value, list):
        if not value:
            return Markup('<span class="muted">an empty list</span>')
        items = Markup("").join(Markup("<li>{}</li>").format(structured(v, depth + 1)) for v in value)
        return Markup('<ol class="kv-list">{}</ol>').format(items)
    if isinstance(value, bool):
        return Markup('<span class="v">{}</span>').format("yes" if value else "no")
    return _text(value)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


FILTERS = {"when": when, "timestamp": timestamp, "until": until, "pretty": pretty, "structured": structured,
           "duration": duration}
__all__ = ["FILTERS", "Lane", "duration", "span", "structured", "timeline", "timestamp", "when"]
