"""Keys and roles: who may call what, and what a bad key gets."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from tests.orchestra.api.conftest import APPROVAL, assert_error_shape
from tests.support.harness import wait_for_run


def test_request_without_a_key_gets_401_in_the_error_shape(api: Any) -> None:
    response = api.get("/v1/runs")
    assert response.status_code == 401
    assert_error_shape(response.json())
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_and_malformed_tokens_get_401(api: Any, key: Any) -> None:
    good = key("viewer")["Authorization"]
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for header in (tampered, "Bearer nonsense", "Bearer orc_000000000000_x"):
        response = api.get("/v1/runs", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert_error_shape(response.json())


def test_revoked_key_stops_working_at_once(api: Any, key: Any) -> None:
    from orchestra.auth import revoke_key

    headers = key("viewer", name="to-revoke-1")
    assert api.get("/v1/runs", headers=headers).status_code == 200
    revoke_key("to-revoke-1")
    response = api.get("/v1/runs", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["errors"][0]["msg"]


def test_expired_key_gets_401(api: Any, key: Any) -> None:
    headers = key("viewer", expires_in=timedelta(seconds=-1))
    response = api.get("/v1/runs", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["errors"][0]["msg"]


def test_only_the_hash_of_a_token_is_stored(key: Any) -> None:
    from orchestra import db
    from orchestra.models import ApiKey

    token = key("viewer", name="hash-only")["Authorization"].removeprefix("Bearer ")
    with db.read_session() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.name == "hash-only")).one()
    stored = " ".join(str(v) for v in (row.id, row.prefix, row.token_hash, row.name))
    secret = token.split("_", 2)[2]  # token_urlsafe may itself contain "_"
    assert token not in stored and secret not in stored


def test_each_role_is_refused_what_it_may_not_do(api: Any, key: Any, workflow: Any) -> None:
    name = workflow()
    run = {"workflow": name, "input": {"order_id": "A1"}}
    refused = [
        ("viewer", "POST", "/v1/runs", run),
        ("auditor", "POST", "/v1/runs", run),
        ("approver", "POST", "/v1/runs", run),
        ("approver", "GET", "/v1/runs", None),
        ("submitter", "POST", "/v1/workflows", None),
        ("viewer", "POST", "/v1/schedules", {"name": "x", "workflow": name, "cron": "* * * * *"}),
        ("submitter", "GET", "/v1/tasks", None),
        ("viewer", "GET", "/v1/tasks", None),
    ]
    for role, method, path, body in refused:
        response = api.request(method, path, json=body, headers=key(role, ["leads"] if role == "approver" else []))
        assert response.status_code == 403, (role, method, path, response.text)
        assert_error_shape(response.json())
        assert response.json()["errors"][0]["type"] == "forbidden"


def test_a_submitter_cannot_read_or_list_another_submitters_run(api: Any, key: Any, workflow: Any) -> None:
    name = workflow()
    alice, bob, viewer = key("submitter"), key("submitter"), key("viewer")
    from orchestra.runs import submit_run

    run, _ = submit_run(name, {"order_id": "A1"}, actor="someone-else", dispatch=False)
    mine = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "A2"}}, headers=alice)
    assert mine.status_code == 202, mine.text  # the suite's Redis is up, so the run is recorded and dispatched
    mine_id = api.get(f"/v1/runs?workflow={name}", headers=alice).json()["runs"][0]["id"]

    assert api.get(f"/v1/runs/{mine_id}", headers=alice).status_code == 200
    refused = api.get(f"/v1/runs/{mine_id}", headers=bob)
    assert refused.status_code == 403
    assert_error_shape(refused.json())
    assert api.get(f"/v1/runs/{run.id}", headers=alice).status_code == 403
    assert [r["id"] for r in api.get(f"/v1/runs?workflow={name}", headers=alice).json()["runs"]] == [mine_id]
    assert api.get(f"/v1/runs?workflow={name}", headers=bob).json()["runs"] == []
    assert len(api.get(f"/v1/runs?workflow={name}", headers=viewer).json()["runs"]) == 2
    assert api.get(f"/v1/runs/{run.id}/audit", headers=alice).status_code == 403


def test_the_keys_name_is_the_actor_of_the_events_its_request_causes(
        api: Any, key: Any, workflow: Any, workers: Any) -> None:
    name = workflow(APPROVAL)  # it parks on a person, so it is still open when the cancel comes
    submitter = key("submitter", name="billing-service")
    response = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "A1"}}, headers=submitter)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert wait_for_run(run_id)["status"] == "waiting"
    events = api.get(f"/v1/runs/{run_id}/audit", headers=key("auditor")).json()["events"]
    assert events[0]["type"] == "run.submitted" and events[0]["actor"] == "billing-service"
    cancelled = api.post(f"/v1/runs/{run_id}/cancel", headers=key("admin", name="ops-admin"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    events = api.get(f"/v1/runs/{run_id}/audit", headers=key("auditor")).json()["events"]
    assert [e["actor"] for e in events if e["type"] == "run.cancelled"] == ["ops-admin"]


def test_a_session_cookie_authenticates_like_the_bearer_token_without_carrying_it(api: Any, key: Any) -> None:
    from orchestra.api.deps import SESSION_COOKIE, end_session, session_cookie

    token = key("viewer")["Authorization"].removeprefix("Bearer ")
    cookie = session_cookie(token)
    assert token not in cookie and token.split("_")[-1] not in cookie
    api.cookies.set(SESSION_COOKIE, cookie)
    assert api.get("/v1/runs").status_code == 200
    api.cookies.set(SESSION_COOKIE, cookie + "x")
    assert api.get("/v1/runs").status_code == 401
    end_session(cookie)
    api.cookies.set(SESSION_COOKIE, cookie)
    assert api.get("/v1/runs").status_code == 401  # a copied cookie dies with its session
