"""API keys: creation, the dev admin key, and what each role is granted."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.auth import GRANTS, Permission, Principal, Role, authenticate, create_key, ensure_dev_admin_key
from orchestra.errors import AuthError, Conflict, Forbidden, InputError


def test_the_dev_admin_key_is_created_once_and_kept_in_var(tmp_path: Path) -> None:
    token = ensure_dev_admin_key(tmp_path)
    assert token is not None and (tmp_path / "admin.token").read_text().strip() == token
    assert (tmp_path / "admin.token").stat().st_mode & 0o777 == 0o600
    assert authenticate(token).role is Role.admin
    assert ensure_dev_admin_key(tmp_path) is None
    (tmp_path / "admin.token").unlink()
    replacement = ensure_dev_admin_key(tmp_path)  # the file was lost: the old key is revoked and replaced
    assert replacement is not None and replacement != token
    with pytest.raises(AuthError):
        authenticate(token)


def test_a_key_needs_a_known_role_and_a_free_name() -> None:
    with pytest.raises(InputError) as bad:
        create_key("someone", "superuser")
    assert bad.value.errors[0]["loc"] == ["role"]
    create_key("unique-name-1", "viewer")
    with pytest.raises(Conflict):
        create_key("unique-name-1", "viewer")


def test_roles_grant_exactly_what_the_issue_lists() -> None:
    assert GRANTS[Role.admin] == frozenset(Permission)
    assert Permission.runs_read not in GRANTS[Role.submitter]
    assert Permission.audit_read in GRANTS[Role.auditor] and Permission.audit_read not in GRANTS[Role.viewer]
    assert GRANTS[Role.approver] == {Permission.tasks_decide}
    viewer = Principal("v", Role.viewer)
    with pytest.raises(Forbidden, match="role 'viewer'"):
        viewer.require(Permission.runs_submit)
