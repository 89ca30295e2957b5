"""Notifications to approvers: a Slack-compatible webhook and SMTP email.

Channels are data in ``config/notifications.yaml``; secrets are named by
environment variable (``url_env``, ``password_env``), never written there. A
channel whose required variable is unset is skipped. Each message carries a
signed, single-use, expiring link to the task in the inbox, bound to the task
id, its escalation level and its payload hash (``make_link`` / ``verify_link``).

Sending happens in a worker (the ``orchestra.notify`` task), retried with
tenacity. A notification that still fails is audited and never fails the run.
"""

from __future__ import annotations

import logging
import os
import secrets
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from celery import shared_task
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from tenacity import retry, stop_after_attempt, wait_exponential

from orchestra import db, keys, transitions
from orchestra.errors import AuthError, ConfigError, TaskExpired
from orchestra.models import HumanTask, TaskStatus
from orchestra.settings import get_settings

log = logging.getLogger(__name__)

NOTIFY_TASK = "orchestra.notify"
LINK_SALT = "orchestra.task-link"
DEFAULT_LINK_TTL = 72 * 3600


@dataclass(frozen=True)
class Channel:
    """One place notifications go."""

    name: str
    kind: str  # webhook | email
    url: str = ""  # webhook
    host: str = ""  # email
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    sender: str = "orchestra@localhost"
    to: tuple[str, ...] = ()  # default recipients
    recipients: dict[str, list[str]] = field(default_factory=dict)  # assignee -> addresses
    timeout: float = 10.0
    attempts: int = 3


def _from_env(raw: dict[str, Any], key: str) -> str:
    """``raw[key]``, or the environment variable named by ``raw[key + '_env']``."""
    if raw.get(f"{key}_env"):
        return os.environ.get(str(raw[f"{key}_env"]), "")
    return str(raw.get(key) or "")


def _channel(raw: dict[str, Any]) -> Channel | None:
    kind = raw.get("kind")
    if kind not in ("webhook", "email"):
        raise ConfigError(f"notification channel '{raw.get('name')}' has kind {kind!r}; use webhook or email")
    needed = "url" if kind == "webhook" else "host"
    value = _from_env(raw, needed)
    if not value:
        return None  # its environment variable is unset: the channel is off
    return Channel(name=str(raw.get("name") or kind), kind=str(kind), url=value if kind == "webhook" else "",
                   host=value if kind == "email" else "", port=int(raw.get("port") or 25),
                   username=_from_env(raw, "username"), password=_from_env(raw, "password"),
                   starttls=bool(raw.get("starttls", False)), sender=str(raw.get("from") or "orchestra@localhost"),
                   to=tuple(raw.get("to") or ()), recipients=dict(raw.get("recipients") or {}),
                   timeout=float(raw.get("timeout") or 10), attempts=int(raw.get("attempts") or 3))


@lru_cache(maxsize=8)
def _load(path: Path, mtime: float) -> tuple[tuple[Channel, ...], int]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with `channels:`; see config/notifications.yaml")
    channels = [c for c in (_channel(raw) for raw in data.get("channels") or []) if c is not None]
    return tuple(channels), int(data.get("link_ttl") or DEFAULT_LINK_TTL)


def load_channels() -> tuple[tuple[Channel, ...], int]:
    """The enabled channels and the link lifetime in seconds, from ``<config_dir>/notifications.yaml``."""
    path = get_settings().config_dir / "notifications.yaml"
    if not path.exists():
        return (), DEFAULT_LINK_TTL
    return _load(path, path.stat().st_mtime)


def secret_key() -> str:
    """``ORCHESTRA_SECRET_KEY``, or the key kept in ``var/secret_key`` (shared with the API)."""
    settings = get_settings()
    if settings.secret_key:
        return settings.secret_key
    path = settings.var_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
        except FileExistsError:
            pass  # another process made it first
    return path.read_text().strip()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(), salt=LINK_SALT)


def make_link(task: HumanTask) -> str:
    """A signed, single-use link to ``task`` in the inbox, bound to its level and payload hash."""
    token = _serializer().dumps({"t": task.id, "l": task.level, "h": task.payload_hash, "n": secrets.token_hex(8)})
    return f"{get_settings().public_url.rstrip('/')}/ui/tasks/{task.id}?link={token}"


def verify_link(token: str, *, consume: bool = True) -> str:
    """The task id a link stands for. Refuses a forged, expired, used or outdated link.

    Raises:
        AuthError: the signature does not verify. TaskExpired: expired, used, or the task moved on.
    """
    _, ttl = load_channels()
    try:
        data = _serializer().loads(token, max_age=ttl)
    except SignatureExpired:
        raise TaskExpired("this task link has expired; open the task from the inbox instead") from None
    except BadSignature:
        raise AuthError("this task link is not valid (its signature does not verify); use the link as sent") from None
    with db.read_session() as session:
        task = session.get(HumanTask, str(data.get("t")))
    if task is None or task.status != TaskStatus.open.value:
        raise TaskExpired("the task this link points to is no longer open; see the inbox")
    if task.level != data.get("l") or task.payload_hash != data.get("h"):
        raise TaskExpired(f"this link is for an earlier version of task {task.id} (it was escalated or its payload "
                          "changed); use the newest notification or the inbox")
    if consume and not keys.client().set(keys.LINK + str(data.get("n")), task.id, nx=True, ex=ttl):
        raise TaskExpired("this task link was already used; each link works once, open the task from the inbox")
    return task.id


def _message(task: HumanTask, reason: str, link: str) -> tuple[str, str]:
    verb = "escalated to you" if reason == "escalated" else "waiting for your decision"
    subject = f"[Orchestra] {task.title}"
    text = (f"{task.title}\n\n{task.body or ''}\n\nTask {task.id} is {verb} (level {task.level}).\n"
            f"Assignees: {', '.join(task.assignees or [])}\n"
            + (f"Deadline: {task.deadline.isoformat()}\n" if task.deadline else "") + f"\nDecide: {link}\n")
    return subject, text


def _send_webhook(channel: Channel, task: HumanTask, reason: str, link: str) -> None:
    subject, text = _message(task, reason, link)
    body = {"text": f"{subject}\n<{link}|Open the task>",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{task.title}*\n{task.body or ''}"}},
                       {"type": "context", "elements": [{"type": "mrkdwn", "text": f"level {task.level} · {reason}"}]},
                       {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text",
                                                         "text": "Open the task"}, "url": link}]}],
            "task_id": task.id, "run_id": task.run_id, "level": task.level, "reason": reason, "plain": text}
    response = httpx.post(channel.url, json=body, timeout=channel.timeout)
    response.raise_for_status()


def _send_email(channel: Channel, task: HumanTask, reason: str, link: str) -> None:
    subject, text = _message(task, reason, link)
    to = sorted({addr for a in task.assignees or [] for addr in channel.recipients.get(a, [])}) or list(channel.to)
    if not to:
        raise ConfigError(f"email channel '{channel.name}' has no address for {task.assignees}; add `to` or `recipients`")
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, channel.sender, ", ".join(to)
    message.set_content(text)
    with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout) as smtp:
        if channel.starttls:
            smtp.starttls()
        if channel.username:
            smtp.login(channel.username, channel.password)
        smtp.send_message(message)


def deliver(channel: Channel, task: HumanTask, reason: str) -> None:
    """Send one notification over ``channel``, retried with exponential backoff."""
    send = _send_webhook if channel.kind == "webhook" else _send_email
    link = make_link(task)
    retrying = retry(stop=stop_after_attempt(channel.attempts), wait=wait_exponential(multiplier=0.2, max=5), reraise=True)
    retrying(send)(channel, task, reason, link)


def _audit(task: HumanTask, type: str, payload: dict[str, Any]) -> None:
    transitions.audit(task.run_id, type, step_id=task.step_id, payload={"task_id": task.id, **payload})


def send_notifications(task_id: str, reason: str) -> dict[str, str]:
    """Notify every enabled channel about ``task_id``; returns ``{channel: "sent"|error}``. Never raises."""
    channels, _ = load_channels()
    with db.read_session() as session:
        task = session.get(HumanTask, task_id)
    if task is None or task.status != TaskStatus.open.value:
        return {}
    results: dict[str, str] = {}
    for channel in channels:
        try:
            deliver(channel, task, reason)
            results[channel.name] = "sent"
            _audit(task, "notification.sent", {"channel": channel.name, "kind": channel.kind, "reason": reason,
                                               "level": task.level})
        except Exception as exc:  # noqa: BLE001 - an observer: audited, never fails the run
            from orchestra.redact import redact_text

            results[channel.name] = redact_text(f"{type(exc).__name__}: {exc}")
            log.warning("notification of task %s over %s failed: %s", task_id, channel.name, results[channel.name])
            try:
                _audit(task, "notification.failed", {"channel": channel.name, "kind": channel.kind, "reason": reason,
                                                     "error": results[channel.name]})
            except Exception:  # noqa: BLE001
                log.exception("could not audit the failed notification of task %s", task_id)
    return results


@shared_task(name=NOTIFY_TASK, acks_late=True)
def notify_task(task_id: str, reason: str) -> dict[str, str]:
    """The worker side of ``enqueue``."""
    return send_notifications(task_id, reason)


def enqueue(task_id: str, reason: str) -> None:
    """Ask a worker to notify about ``task_id``; does nothing without channels, never raises."""
    try:
        channels, _ = load_channels()
        if not channels:
            return
        from orchestra import broker

        broker.notify(task_id, reason)
    except Exception:  # noqa: BLE001 - notifications never fail the run
        log.exception("could not enqueue the notification of task %s", task_id)
