"""``/v1/schedules``: cron schedules that start runs."""

from __future__ import annotations

from fastapi import APIRouter, Response

from orchestra import schedules
from orchestra.api.deps import Caller
from orchestra.api.responses import errors
from orchestra.api.schemas import ScheduleIn, ScheduleList, ScheduleOut
from orchestra.auth import Permission

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


@router.get("", response_model=ScheduleList, responses=errors(401, 403, 503))
def get_schedules(caller: Caller) -> ScheduleList:
    """Every schedule with its next due time."""
    caller.require(Permission.schedules_read)
    return ScheduleList.model_validate({"schedules": schedules.list_schedules()})


@router.post("", status_code=201, response_model=ScheduleOut, responses=errors(401, 403, 413, 422, 503))
def post_schedule(body: ScheduleIn, caller: Caller) -> ScheduleOut:
    """Create a schedule, or replace the one with the same name."""
    caller.require(Permission.schedules_write)
    return ScheduleOut.model_validate(schedules.save_schedule(body.model_dump()))


@router.delete("/{name}", status_code=204, response_class=Response, responses=errors(401, 403, 404, 422, 503))
def delete_schedule(name: str, caller: Caller) -> Response:
    """Delete a schedule; runs it already started are not touched."""
    caller.require(Permission.schedules_write)
    schedules.delete_schedule(name)
    return Response(status_code=204)
