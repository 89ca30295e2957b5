"""Tables that stay readable at 80 columns.

Ids show as their last 8 characters (which every command accepts back; the first ones of a UUIDv7 are
its timestamp, the same for every run of a minute), times as "3 min ago",
statuses in a fixed-width column, and free text is cut with an ellipsis on one line rather than
wrapped. ``wide=True`` shows full ids, ISO timestamps and longer text instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

SHORT_ID = 8
STATUS_WIDTH = 9  # "succeeded" and "cancelled", the longest run, step and task statuses
STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "magenta", "waiting": "yellow",
                "running": "cyan", "pending": "white", "skipped": "dim", "open": "yellow", "approved": "green",
                "rejected": "red", "expired": "magenta"}


def short_id(value: str | None, wide: bool = False) -> str:
    """An id's last 8 characters (its random part), which every command takes back; all of it when ``wide``."""
    return (value or "") if wide else (value or "")[-SHORT_ID:]


def status(text: str) -> str:
    return f"[{STATUS_STYLE.get(text, 'white')}]{escape(text)}[/]"


def _parse(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def ago(value: str | datetime | None, *, now: datetime | None = None, wide: bool = False) -> str:
    """``3 min ago`` or ``in 2 h`` (the full ISO time when ``wide``); empty for no time."""
    moment = _parse(value)
    if moment is None:
        return ""
    if wide:
        return moment.isoformat(timespec="milliseconds")
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    span = abs(seconds)
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600), (86400 * 60, "d", 86400)):
        if span < limit:
            amount = f"{int(span // size)} {unit}"
            break
    else:
        return moment.date().isoformat()
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def clock(value: str | datetime | None, *, wide: bool = False) -> str:
    """The UTC time of day to the millisecond (``14:03:07.412``), the full ISO time when ``wide``."""
    moment = _parse(value)
    if moment is None:
        return ""
    moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds") if wide else moment.strftime("%H:%M:%S.%f")[:12]


def duration(start: str | None, end: str | None) -> str:
    first, last = _parse(start), _parse(end)
    if first is None or last is None:
        return ""
    seconds = (last - first).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def table(*columns: Column, title: str | None = None) -> Table:
    return Table(*columns, title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                 title_justify="left")


def fixed(header: str, width: int, wide: bool = False) -> Column:
    """A column that is never wrapped nor shortened: ids, statuses, times."""
    return Column(header, no_wrap=True, width=None if wide else width)


def named(header: str, values: Iterable[str], wide: bool = False, cap: int = 24) -> Column:
    """A column of names people type back (keys, schedules, workflows): whole up to ``cap`` characters."""
    longest = max([len(header), *(len(v) for v in values)])
    return Column(header, no_wrap=True, width=None if wide else min(longest, cap), overflow="ellipsis")


def text(header: str, wide: bool = False, ratio: int = 1, max_width: int | None = None) -> Column:
    """A column of free text that gives way when the terminal is narrow (its cells stay on one line)."""
    return Column(header, ratio=ratio, max_width=None if wide else max_width, overflow="fold" if wide else "ellipsis")


def add_row(table: Table, *cells: str, wide: bool = False) -> None:
    """Cells as one-line text cut with an ellipsis (folded when ``wide``), so a row is one line at 80 columns."""
    row = []
    for cell in cells:
        line = Text.from_markup(cell, overflow="fold" if wide else "ellipsis")
        line.no_wrap = not wide
        row.append(line)
    table.add_row(*row)


def one_line(value: Any, limit: int = 200) -> str:
    body = value if isinstance(value, str) else json.dumps(value, default=str)
    body = " ".join(body.split())
    return escape(body if len(body) <= limit else body[: limit - 1] + "…")


def runs_table(rows: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    out = table(fixed("id", 36 if wide else SHORT_ID, wide), text("workflow", wide, ratio=2, max_width=30),
                fixed("status", STATUS_WIDTH, wide), fixed("created", 36 if wide else 10, wide),
                text("error", wide, ratio=3))
    for r in rows:
        add_row(out, short_id(r["id"], wide), escape(f"{r['workflow']} v{r['version']}"), status(r["status"]),
                    ago(r["created_at"], wide=wide), one_line(r.get("error") or "", 2000 if wide else 200), wide=wide)
    return out


def tasks_table(rows: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    out = table(fixed("task", 36 if wide else SHORT_ID, wide), text("title", wide, ratio=3),
                fixed("run", 36 if wide else SHORT_ID, wide), text("step", wide, max_width=12),
                text("assignees", wide, ratio=2, max_width=14), fixed("deadline", 29 if wide else 10, wide),
                fixed("status", STATUS_WIDTH, wide))
    for t in rows:
        add_row(out, short_id(t["id"], wide), escape(t["title"]), short_id(t["run_id"], wide), escape(t["step_id"]),
                    escape(", ".join(t["assignees"] or [])) + (f" (L{t['level']})" if t.get("level") else ""),
                    ago(t["deadline"], wide=wide), status(t["status"]), wide=wide)
    return out


def steps_table(view: dict[str, Any], *, wide: bool = False) -> Table:
    title = (f"run {short_id(view['id'], wide)} · {escape(view['workflow'])} v{view['version']} · "
             f"{status(view['status'])}")
    out = table(text("step", wide, max_width=24), fixed("status", STATUS_WIDTH, wide), fixed("try", 3, wide),
                fixed("started", 29 if wide else 12, wide), fixed("took", 7, wide), text("output / error", wide, ratio=3),
                title=title)
    for s in view["steps"]:
        label = s["id"] + (f"[{s['item']}]" if s.get("item") is not None else "")
        detail = s["error"] or ("" if s["output"] is None else s["output"])
        add_row(out, escape(label), status(s["status"]), str(s["attempts"]), clock(s["started_at"], wide=wide),
                    duration(s["started_at"], s["finished_at"]), one_line(detail, 4000 if wide else 200), wide=wide)
    return out


def audit_table(events: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    out = table(fixed("seq", 4, wide), fixed("at", 29 if wide else 12, wide), fixed("type", 20, wide),
                text("step", wide, max_width=14), text("actor", wide, max_width=16), text("payload", wide, ratio=3))
    for e in events:
        add_row(out, str(e["seq"]), clock(e["at"], wide=wide), escape(e["type"]), escape(e.get("step_id") or ""),
                    escape(e.get("actor") or ""), one_line(e.get("payload"), 100_000 if wide else 200), wide=wide)
    return out


def keys_table(rows: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    rows = list(rows)
    revoked = any(k["revoked_at"] for k in rows)  # the column only when --revoked lists revoked keys
    columns = [named("name", (k["name"] for k in rows), wide), fixed("role", 9, wide), text("groups", wide),
               fixed("created", 29 if wide else 10, wide), fixed("expires", 29 if wide else 10, wide),
               fixed("last used", 29 if wide else 10, wide)]
    out = table(*columns, *([fixed("revoked", 29 if wide else 10, wide)] if revoked else []), title="API keys")
    for k in rows:
        cells = [escape(k["name"]), k["role"], escape(", ".join(k["groups"])), ago(k["created_at"], wide=wide),
                 ago(k["expires_at"], wide=wide) or "never", ago(k["last_used_at"], wide=wide) or "never"]
        add_row(out, *cells, *([ago(k["revoked_at"], wide=wide)] if revoked else []), wide=wide)
    return out


def workflows_table(rows: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    rows = list(rows)
    out = table(named("name", (w["name"] for w in rows), wide, cap=32), fixed("latest", 6, wide), fixed("versions", 8, wide),
                fixed("steps", 5, wide), text("description", wide, ratio=3))
    for w in rows:
        add_row(out, escape(w["name"]), f"v{w['version']}", str(w["versions"]), str(w.get("steps", "")),
                    one_line(w.get("description") or "", 2000 if wide else 200), wide=wide)
    return out


def schedules_table(rows: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    rows = list(rows)
    cron = max((len(s["cron"]) for s in rows), default=4)  # a cron expression cut short means nothing
    out = table(named("name", (s["name"] for s in rows), wide), text("workflow", wide), fixed("cron", cron, wide),
                text("timezone", wide), fixed("next", 29 if wide else 10, wide),
                fixed("last run", 36 if wide else SHORT_ID, wide))
    for s in rows:
        due = ago(s["next_run_at"], wide=wide) if s["enabled"] else "disabled"
        add_row(out, escape(s["name"]), escape(s["workflow"]), escape(s["cron"]), escape(s["timezone"]), due,
                short_id(s["last_run_id"], wide), wide=wide)
    return out
