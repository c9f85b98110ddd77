"""JSON routes for workflows, versions, runs and the incoming webhook trigger."""

from typing import Any, Literal

from flask import g, jsonify, request, url_for
from pydantic import BaseModel, Field

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError
from app.api.openapi import operation
from app.api.pagination import decode_cursor, encode_cursor, parse_limit
from app.billing.limits import LimitExceeded
from app.extensions import db
from app.orgs.access import role_required
from app.timeutil import isoformat
from app.workflows import runs as run_service
from app.workflows import service, triggers
from app.workflows.schemas import Definition

TAG = "workflows"


class WorkflowSave(BaseModel):
    definition: Definition
    note: str = Field("", max_length=500, description="Why this version was saved.")


class WorkflowOut(BaseModel):
    id: int
    name: str
    description: str
    trigger_type: str
    enabled: bool
    version: int
    definition: dict[str, Any]
    webhook_url: str | None = Field(None, description="The secret URL that starts the workflow (webhook trigger).")
    created_at: str
    updated_at: str


class WorkflowPage(BaseModel):
    data: list[WorkflowOut]
    next_cursor: str | None


class VersionOut(BaseModel):
    number: int
    note: str
    created_by: str | None
    created_at: str
    definition: dict[str, Any] | None = None


class VersionList(BaseModel):
    data: list[VersionOut]


class ExecuteRequest(BaseModel):
    input: dict[str, Any] = Field({}, description="Available to steps as {{ trigger.FIELD }}.")


class AttemptOut(BaseModel):
    step_id: str
    step_type: str
    number: int
    status: str
    input: Any
    output: Any
    log: str
    error: str | None
    started_at: str | None
    finished_at: str | None


class RunOut(BaseModel):
    id: int
    workflow_id: int
    version: int
    status: str
    trigger_type: str
    input: dict[str, Any]
    error: str | None
    rerun_of: int | None
    rerun_from_step: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: list[AttemptOut] | None = None


class RunPage(BaseModel):
    data: list[RunOut]
    next_cursor: str | None


class RerunRequest(BaseModel):
    start: Literal["start", "failed_step"] = Field(
        "start", description="Re-run from the start or from the failed step."
    )


def _json_body(required=True):
    if not request.get_data():
        if required:
            raise ApiError(400, "missing_body", "Send a JSON object as the request body.")
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_json", "The request body must be a JSON object with Content-Type: application/json."
        )
    return body


def workflow_json(workflow):
    webhook_url = None
    if workflow.trigger_type == "webhook" and workflow.webhook_token:
        webhook_url = url_for("api.receive_workflow_webhook", token=workflow.webhook_token, _external=True)
    return WorkflowOut(
        id=workflow.id,
        name=workflow.name,
        description=workflow.description,
        trigger_type=workflow.trigger_type,
        enabled=workflow.enabled,
        version=workflow.version_number,
        definition=workflow.definition,
        webhook_url=webhook_url,
        created_at=isoformat(workflow.created_at),
        updated_at=isoformat(workflow.updated_at),
    ).model_dump()


def version_json(version, with_definition=False):
    return VersionOut(
        number=version.number,
        note=version.note,
        created_by=version.created_by.email if version.created_by else None,
        created_at=isoformat(version.created_at),
        definition=version.definition if with_definition else None,
    ).model_dump()


def run_json(run, with_attempts=False):
    attempts = None
    if with_attempts:
        attempts = [
            AttemptOut(
                step_id=attempt.step_id,
                step_type=attempt.step_type,
                number=attempt.number,
                status=attempt.status,
                input=attempt.input,
                output=attempt.output,
                log=attempt.log,
                error=attempt.error,
                started_at=isoformat(attempt.started_at),
                finished_at=isoformat(attempt.finished_at),
            )
            for attempt in run.attempts
        ]
    return RunOut(
        id=run.id,
        workflow_id=run.workflow_id,
        version=run.version_number,
        status=run.status,
        trigger_type=run.trigger_type,
        input=run.input or {},
        error=run.error,
        rerun_of=run.rerun_of_id,
        rerun_from_step=run.rerun_from_step,
        created_at=isoformat(run.created_at),
        started_at=isoformat(run.started_at),
        finished_at=isoformat(run.finished_at),
        attempts=attempts,
    ).model_dump()


def _save_body():
    body = _json_body()
    if "definition" not in body:
        raise ApiError(422, "validation_error", 'Send the workflow as {"definition": {...}, "note": "..."}.')
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise ApiError(422, "validation_error", "note must be text.")
    return body["definition"], note


@bp.get("/workflows")
@operation(
    "List workflows",
    response_model=WorkflowPage,
    query=[
        ("limit", "integer", "Workflows per page, 1 to 500."),
        ("cursor", "string", "next_cursor of the last page."),
    ],
    tag=TAG,
)
@api_auth_required
@role_required("viewer")
def list_workflows():
    limit = parse_limit()
    after = decode_cursor(request.args["cursor"], 1)[0] if request.args.get("cursor") else 0
    from app.workflows.models import Workflow

    rows = db.session.scalars(
        db.select(Workflow)
        .where(Workflow.org_id == g.org_id, Workflow.id > after)
        .order_by(Workflow.id)
        .limit(limit + 1)
    ).all()
    next_cursor = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return jsonify({"data": [workflow_json(row) for row in rows[:limit]], "next_cursor": next_cursor})


@bp.post("/workflows")
@operation("Create a workflow", request_model=WorkflowSave, response_model=WorkflowOut, status=201, tag=TAG)
@api_auth_required
@role_required("member")
def create_workflow():
    definition, note = _save_body()
    workflow = service.create_workflow(g.org_id, g.user.id, definition, note)
    db.session.commit()
    response = jsonify(workflow_json(workflow))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_workflow", workflow_id=workflow.id)
    return response


@bp.get("/workflows/<int:workflow_id>")
@operation("Get a workflow", response_model=WorkflowOut, tag=TAG)
@api_auth_required
@role_required("viewer")
def get_workflow(workflow_id):
    return jsonify(workflow_json(service.get_workflow(g.org_id, workflow_id)))


@bp.put("/workflows/<int:workflow_id>")
@operation("Save a new version of a workflow", request_model=WorkflowSave, response_model=WorkflowOut, tag=TAG)
@api_auth_required
@role_required("member")
def update_workflow(workflow_id):
    definition, note = _save_body()
    workflow = service.update_workflow(g.org_id, workflow_id, g.user.id, definition, note)
    db.session.commit()
    return jsonify(workflow_json(workflow))


@bp.delete("/workflows/<int:workflow_id>")
@operation("Delete a workflow with its versions and runs", status=204, tag=TAG)
@api_auth_required
@role_required("member")
def delete_workflow(workflow_id):
    service.delete_workflow(g.org_id, workflow_id, g.user.id)
    db.session.commit()
    return "", 204


@bp.post("/workflows/<int:workflow_id>/webhook-secret")
@operation("Rotate the secret of the incoming webhook URL", response_model=WorkflowOut, tag=TAG)
@api_auth_required
@role_required("member")
def rotate_webhook_secret(workflow_id):
    workflow = service.rotate_webhook_token(g.org_id, workflow_id, g.user.id)
    db.session.commit()
    return jsonify(workflow_json(workflow))


@bp.get("/workflows/<int:workflow_id>/versions")
@operation("List the versions of a workflow, newest first", response_model=VersionList, tag=TAG)
@api_auth_required
@role_required("viewer")
def list_versions(workflow_id):
    return jsonify({"data": [version_json(version) for version in service.list_versions(g.org_id, workflow_id)]})


@bp.get("/workflows/<int:workflow_id>/versions/<int:number>")
@operation("Get one version with its definition", response_model=VersionOut, tag=TAG)
@api_auth_required
@role_required("viewer")
def get_version(workflow_id, number):
    return jsonify(version_json(service.get_version(g.org_id, workflow_id, number), with_definition=True))


@bp.post("/workflows/<int:workflow_id>/versions/<int:number>/restore")
@operation("Restore a version by saving its definition as a new version", response_model=WorkflowOut, tag=TAG)
@api_auth_required
@role_required("member")
def restore_version(workflow_id, number):
    workflow = service.restore_version(g.org_id, workflow_id, number, g.user.id)
    db.session.commit()
    return jsonify(workflow_json(workflow))


@bp.post("/workflows/<int:workflow_id>/execute")
@operation(
    "Start a run now, with an optional input", request_model=ExecuteRequest, response_model=RunOut, status=202, tag=TAG
)
@api_auth_required
@role_required("member")
def execute_workflow(workflow_id):
    body = _json_body(required=False)
    data = body.get("input", {})
    run = run_service.execute_manually(g.org_id, workflow_id, g.user.id, data)
    db.session.commit()
    response = jsonify(run_json(run))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_run", run_id=run.id)
    return response


@bp.post("/hooks/workflows/<token>")
@operation(
    "Start the workflow of this secret URL; the JSON body becomes the run's input", status=202, tag=TAG, public=True
)
def receive_workflow_webhook(token):
    """Incoming webhook trigger: a JSON object body is the input; any other body arrives as {"body": text}.

    Past the plan's monthly run limit the run is stored as skipped and the response is 402.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        text = request.get_data(as_text=True)
        body = {"body": text} if text else {}
    run = triggers.receive_webhook(token, body)
    db.session.commit()
    if run.status == "skipped":
        # The skipped run stays in the workflow's history; the sender learns why nothing ran.
        raise LimitExceeded(run.error, {"limit": "runs_per_month", "run_id": run.id, "status": run.status})
    return jsonify({"run_id": run.id, "status": run.status}), 202


RUN_QUERY = [
    ("workflow_id", "integer", "Only runs of this workflow."),
    ("status", "string", "queued, running, waiting, succeeded, failed, cancelled or skipped."),
    ("trigger", "string", "manual, schedule, webhook or event_match."),
    ("since", "string", "Runs created at or after this date or ISO 8601 time."),
    ("until", "string", "Runs created before this date or ISO 8601 time."),
    ("limit", "integer", "Runs per page, 1 to 500; 50 by default."),
    ("cursor", "string", "The next_cursor of the previous page."),
]


@bp.get("/runs")
@operation("List runs, newest first", response_model=RunPage, query=RUN_QUERY, tag=TAG)
@api_auth_required
@role_required("viewer")
def list_runs():
    limit = parse_limit()
    args = request.args
    filters = run_service.parse_filters(args.get("status"), args.get("trigger"), args.get("since"), args.get("until"))
    workflow_id = args.get("workflow_id", type=int)
    if args.get("workflow_id") and workflow_id is None:
        raise ApiError(400, "invalid_filter", "workflow_id must be a whole number.")
    before = decode_cursor(args["cursor"], 1)[0] if args.get("cursor") else None
    rows = run_service.list_runs(g.org_id, workflow_id, filters, limit, before)
    next_cursor = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return jsonify({"data": [run_json(row) for row in rows[:limit]], "next_cursor": next_cursor})


@bp.get("/runs/<int:run_id>")
@operation("Get a run with its step attempts", response_model=RunOut, tag=TAG)
@api_auth_required
@role_required("viewer")
def get_run(run_id):
    return jsonify(run_json(run_service.get_run(g.org_id, run_id), with_attempts=True))


@bp.post("/runs/<int:run_id>/cancel")
@operation("Cancel a queued, waiting or running run", response_model=RunOut, tag=TAG)
@api_auth_required
@role_required("member")
def cancel_run(run_id):
    run = run_service.cancel_run(g.org_id, run_id)
    db.session.commit()
    return jsonify(run_json(run))


@bp.post("/runs/<int:run_id>/rerun")
@operation(
    "Re-run from the start or from the failed step",
    request_model=RerunRequest,
    response_model=RunOut,
    status=202,
    tag=TAG,
)
@api_auth_required
@role_required("member")
def rerun(run_id):
    body = _json_body(required=False)
    start = body.get("start", "start")
    if start not in ("start", "failed_step"):
        raise ApiError(422, "validation_error", "start must be 'start' or 'failed_step'.")
    run = run_service.rerun(g.org_id, run_id, g.user.id, from_failed_step=start == "failed_step")
    db.session.commit()
    response = jsonify(run_json(run))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_run", run_id=run.id)
    return response
