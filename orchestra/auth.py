"""API keys, roles and what each role may do.

A token looks like ``orc_<prefix>_<secret>``. The prefix is stored in clear to
find the key; only the SHA-256 of the whole token is stored, and it is compared
in constant time. The token itself is shown once, when the key is created.

Roles::

    admin      everything
    submitter  submit runs, read the runs it submitted, signal its runs, read workflows
    approver   read and decide the tasks of its groups
    viewer     read runs and workflows
    auditor    read runs, workflows and audit trails
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from orchestra import db
from orchestra.errors import AuthError, Conflict, Forbidden, InputError, NotFound
from orchestra.ids import new_id
from orchestra.models import ApiKey, Run, utcnow

TOKEN_PREFIX = "orc_"
DEV_ADMIN_NAME = "dev-admin"
# last_used_at is refreshed at most this often, so reads do not each take a write lock.
_TOUCH_EVERY = timedelta(seconds=60)


class Role(str, Enum):
    admin = "admin"  # everything
    submitter = "submitter"  # submits runs and reads and signals its own
    approver = "approver"  # decides the human tasks of its groups
    viewer = "viewer"  # reads runs and workflows
    auditor = "auditor"  # reads runs, workflows and audit trails


class Permission(str, Enum):
    workflows_read = "workflows:read"  # list and read specs
    workflows_write = "workflows:write"  # register specs
    runs_submit = "runs:submit"  # start runs
    runs_read_own = "runs:read-own"  # read the runs this key submitted
    runs_read = "runs:read"  # read every run
    runs_signal_own = "runs:signal-own"  # signal the runs this key submitted
    runs_signal = "runs:signal"  # signal every run
    runs_manage = "runs:manage"  # cancel and retry runs
    audit_read = "audit:read"  # read and export audit trails
    tasks_decide = "tasks:decide"  # list and decide human tasks of one's groups
    schedules_read = "schedules:read"  # list schedules
    schedules_write = "schedules:write"  # create and delete schedules
    keys_manage = "keys:manage"  # create, list and revoke API keys


P = Permission
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.submitter: frozenset({P.runs_submit, P.runs_read_own, P.runs_signal_own, P.workflows_read}),
    Role.approver: frozenset({P.tasks_decide}),
    Role.viewer: frozenset({P.runs_read, P.workflows_read, P.schedules_read}),
    Role.auditor: frozenset({P.runs_read, P.workflows_read, P.audit_read, P.schedules_read}),
}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as. ``name`` is the actor on every audit event it causes."""

    name: str
    role: Role
    groups: tuple[str, ...] = field(default_factory=tuple)
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def require(self, *permissions: Permission) -> None:
        """Raise ``Forbidden`` unless the role holds one of ``permissions``."""
        if not any(self.can(p) for p in permissions):
            wanted = " or ".join(p.value for p in permissions)
            raise Forbidden(f"key '{self.name}' has role '{self.role.value}', which may not do this ({wanted}); "
                            f"use a key whose role allows it")

    def require_run(self, run: Run, every: Permission, own: Permission) -> None:
        """Allow ``every`` on any run, or ``own`` on a run this key submitted; others get ``Forbidden``."""
        if self.can(every) or (self.can(own) and run.submitted_by == self.name):
            return
        if self.can(own):
            raise Forbidden(f"run {run.id} was submitted by another key; key '{self.name}' may only "
                            "act on the runs it submitted")
        self.require(every, own)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InputError("the role is unknown", [{
            "loc": ["role"], "type": "enum",
            "msg": f"'{role}' is not a role; use one of {', '.join(r.value for r in Role)}"}]) from None


def create_key(name: str, role: str, groups: list[str] | None = None, *, expires_in: timedelta | None = None) -> str:
    """Store a new key and return its token. The token is not stored and cannot be shown again."""
    parsed = _parse_role(role)
    if not name.strip():
        raise InputError("the key needs a name", [{"loc": ["name"], "type": "missing",
                                                    "msg": "give the key a name; it is the actor in audit events"}])
    prefix = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with db.write_session() as session:
        active = session.scalars(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))).first()
        if active is not None:
            raise Conflict(f"an active key named '{name}' exists; revoke it first or choose another name")
        session.add(ApiKey(id=new_id(), name=name, role=parsed.value, groups=sorted(set(groups or [])),
                           prefix=prefix, token_hash=_hash(token), created_at=utcnow(),
                           expires_at=utcnow() + expires_in if expires_in else None))
    return token


def key_dict(key: ApiKey) -> dict[str, Any]:
    """A key as listings show it: never its hash."""
    return {"id": key.id, "name": key.name, "role": key.role, "groups": list(key.groups or []),
            "created_at": _iso(key.created_at), "expires_at": _iso(key.expires_at),
            "revoked_at": _iso(key.revoked_at), "last_used_at": _iso(key.last_used_at)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def list_keys(*, include_revoked: bool = False) -> list[dict[str, Any]]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    with db.read_session() as session:
        return [key_dict(k) for k in session.scalars(query)]


def revoke_key(name_or_id: str) -> dict[str, Any]:
    """Revoke the active key with this name or id; its token stops working at once."""
    with db.write_session() as session:
        key = session.scalars(select(ApiKey).where(
            (ApiKey.id == name_or_id) | (ApiKey.name == name_or_id), ApiKey.revoked_at.is_(None))).first()
        if key is None:
            raise NotFound(f"no active key named or with id '{name_or_id}'; list keys with `orchestra keys list`")
        key.revoked_at = utcnow()
        return key_dict(key)


def authenticate(token: str | None) -> Principal:
    """The principal a token stands for; ``AuthError`` for a missing, unknown, revoked or expired token."""
    if not token:
        raise AuthError("no API key given; send `Authorization: Bearer <token>` (create one with `orchestra keys create`)")
    parts = token.split("_")
    if len(parts) < 3 or not token.startswith(TOKEN_PREFIX):
        raise AuthError("the API key is malformed; tokens look like orc_<prefix>_<secret>")
    with db.read_session() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if key is None or not hmac.compare_digest(key.token_hash, _hash(token)):
        raise AuthError("the API key is not valid; check the token or create a new key")
    return _principal_of(key)


def principal_for_key(key_id: str) -> Principal:
    """The principal of a key already authenticated once (a UI session), if it is still valid."""
    with db.read_session() as session:
        key = session.get(ApiKey, key_id)
    if key is None:
        raise AuthError("the session's API key no longer exists; sign in again with a current key")
    return _principal_of(key)


def _principal_of(key: ApiKey) -> Principal:
    now = utcnow()
    if key.revoked_at is not None:
        raise AuthError(f"the API key '{key.name}' was revoked; ask an admin for a new key")
    if key.expires_at is not None and key.expires_at <= now:
        raise AuthError(f"the API key '{key.name}' expired at {key.expires_at.isoformat()}; ask an admin for a new key")
    if key.last_used_at is None or now - key.last_used_at > _TOUCH_EVERY:
        _touch(key.id, now)
    return Principal(name=key.name, role=Role(key.role), groups=tuple(key.groups or ()), key_id=key.id)


def _touch(key_id: str, now: datetime) -> None:
    with db.write_session() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


def ensure_dev_admin_key(var_dir: Path) -> str | None:
    """Create the dev admin key on first start and keep its token in ``var/admin.token``.

    Returns the token when it was created now, else None (the token is in the file).
    """
    token_file = var_dir / "admin.token"
    with db.read_session() as session:
        existing = session.scalars(select(ApiKey).where(ApiKey.name == DEV_ADMIN_NAME,
                                                        ApiKey.revoked_at.is_(None))).first()
    if existing is not None and token_file.exists():
        return None
    if existing is not None:
        revoke_key(existing.id)  # its token was lost with the file; replace it
    token = create_key(DEV_ADMIN_NAME, Role.admin.value)
    var_dir.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token
