"""``/v1/workflows``: register specs (JSON or YAML) and read them back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from orchestra.api.deps import Caller
from orchestra.api.schemas import MAX_INT, WorkflowList, WorkflowOut, WorkflowRef
from orchestra.api.responses import errors
from orchestra.auth import Permission
from orchestra.errors import SpecError
from orchestra.workflows import get_workflow, list_workflows, register_workflow

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "A workflow spec as JSON or YAML (see the spec format in the README).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post("", status_code=201, response_model=WorkflowRef, openapi_extra=_SPEC_BODY,
             responses=errors(401, 403, 413, 422, 503))
async def post_workflow(request: Request, caller: Caller) -> WorkflowRef:
    """Register a spec; changed content makes a new version. An invalid spec gets 422 naming each field."""
    caller.require(Permission.workflows_write)
    raw = await request.body()
    try:
        spec = await run_in_threadpool(register_workflow, raw.decode("utf-8", errors="replace"))
    except SpecError as exc:
        for error in exc.errors:
            error["loc"] = list(error.get("loc") or ["body"])  # a parse error points at the whole body
        raise
    return WorkflowRef(name=spec.name, version=spec.version or 1)


@router.get("", response_model=WorkflowList, responses=errors(401, 403, 503))
def get_workflows(caller: Caller) -> WorkflowList:
    """Every workflow with its latest version."""
    caller.require(Permission.workflows_read)
    return WorkflowList.model_validate({"workflows": list_workflows()})


@router.get("/{name}", response_model=WorkflowOut, responses=errors(401, 403, 404, 422, 503))
def get_one_workflow(name: str, caller: Caller,
                     version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None) -> WorkflowOut:
    """One workflow's spec; the latest version unless ``?version=`` is given."""
    caller.require(Permission.workflows_read)
    spec = get_workflow(name, version)
    return WorkflowOut(name=spec.name, version=spec.version or 1, spec=spec.canonical())
