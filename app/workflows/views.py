"""Workflow pages: list, editor, versions, runs and the run page that follows a run live."""

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.errors import ServiceError
from app.extensions import db
from app.htmx import hx_redirect, is_htmx
from app.orgs.access import role_required
from app.orgs.service import current_org
from app.workflows import runs as run_service
from app.workflows import service
from app.workflows.forms import BLANK, EditorState, apply_action, read_form
from app.workflows.models import RUN_STATUSES, TRIGGER_TYPES
from app.workflows.schemas import STEP_TYPES

bp = Blueprint("workflows", __name__, url_prefix="/workflows")

RUNS_PER_PAGE = 50


def _render_editor(state, workflow=None, suggestion_id=None, status=200, error=None):
    context = {
        "state": state,
        "workflow": workflow,
        "suggestion_id": suggestion_id,
        "step_types": STEP_TYPES,
        "trigger_types": TRIGGER_TYPES,
        "error": error,
    }
    if is_htmx():
        # htmx does not swap 4xx responses, so the fragment that shows a rejected save goes out as 200.
        return render_template("workflows/_editor.html", **context), 200
    return render_template("workflows/edit.html", **context), status


@bp.get("")
@login_required
@role_required("viewer")
def index():
    """The organization's workflows, with a form to import one from a file."""
    workflows = service.list_workflows(current_org().id)
    return render_template("workflows/index.html", workflows=workflows)


@bp.get("/new")
@login_required
@role_required("member")
def new():
    """The editor with a blank workflow, or with a suggestion's draft when ?suggestion=ID is given."""
    suggestion_id = request.args.get("suggestion", type=int)
    definition = BLANK
    if suggestion_id is not None:
        definition = service.suggestion_draft(current_org().id, suggestion_id) or BLANK
    return _render_editor(EditorState(dict(definition)), suggestion_id=suggestion_id)


@bp.post("/new")
@login_required
@role_required("member")
def create():
    """Apply an editor action, or save the new workflow (accepting its suggestion, if any)."""
    state = read_form(request.form)
    suggestion_id = request.form.get("suggestion_id", type=int)
    action = request.form.get("action", "save")
    if action != "save" or state.problems:
        apply_action(state, action, request.form)
        return _render_editor(state, suggestion_id=suggestion_id)
    try:
        workflow = service.create_workflow(
            current_org().id, current_user.id, state.definition, request.form.get("note", ""), suggestion_id
        )
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        state.problems = error.details if isinstance(error.details, list) else []
        return _render_editor(state, suggestion_id=suggestion_id, status=422, error=error.message)
    flash(f"Saved workflow {workflow.name!r} as version 1.", "success")
    return hx_redirect(url_for("workflows.detail", workflow_id=workflow.id))


@bp.get("/<int:workflow_id>")
@login_required
@role_required("viewer")
def detail(workflow_id):
    org = current_org()
    workflow = service.get_workflow(org.id, workflow_id)
    recent = run_service.list_runs(org.id, workflow.id, limit=10)[:10]
    # Scheduled, event and webhook runs past the plan's monthly limit are stored as skipped.
    limit_notice = recent[0].error if recent and recent[0].status == "skipped" else None
    return render_template("workflows/detail.html", workflow=workflow, runs=recent, limit_notice=limit_notice)


@bp.get("/<int:workflow_id>/edit")
@login_required
@role_required("member")
def edit(workflow_id):
    workflow = service.get_workflow(current_org().id, workflow_id)
    return _render_editor(EditorState(dict(workflow.definition)), workflow=workflow)


@bp.post("/<int:workflow_id>/edit")
@login_required
@role_required("member")
def update(workflow_id):
    """Apply an editor action, or save the definition as a new version."""
    org = current_org()
    workflow = service.get_workflow(org.id, workflow_id)
    state = read_form(request.form)
    action = request.form.get("action", "save")
    if action != "save" or state.problems:
        apply_action(state, action, request.form)
        return _render_editor(state, workflow=workflow)
    try:
        service.update_workflow(org.id, workflow.id, current_user.id, state.definition, request.form.get("note", ""))
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        state.problems = error.details if isinstance(error.details, list) else []
        return _render_editor(
            state, workflow=service.get_workflow(org.id, workflow_id), status=422, error=error.message
        )
    flash(f"Saved version {workflow.version_number}.", "success")
    return hx_redirect(url_for("workflows.detail", workflow_id=workflow.id))


@bp.post("/import")
@login_required
@role_required("member")
def import_file():
    """Create a workflow from an exported definition file."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a workflow file (.json) to import.", "error")
        return redirect(url_for("workflows.index"))
    try:
        definition = service.parse_import(upload.read())
        workflow = service.create_workflow(
            current_org().id, current_user.id, definition, f"Imported from {upload.filename}"
        )
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        details = "; ".join(f"{item['field']}: {item['message']}" for item in (error.details or [])[:5])
        flash(f"{error.message} {details}".strip(), "error")
        return redirect(url_for("workflows.index"))
    flash(f"Imported workflow {workflow.name!r}.", "success")
    return redirect(url_for("workflows.detail", workflow_id=workflow.id))


@bp.get("/<int:workflow_id>/export")
@login_required
@role_required("viewer")
def export(workflow_id):
    """Download the definition as a JSON file (no ids, secrets or webhook URL)."""
    workflow = service.get_workflow(current_org().id, workflow_id)
    filename = f"workflow-{workflow.id}-v{workflow.version_number}.json"
    return Response(
        service.export_definition(workflow),
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.post("/<int:workflow_id>/delete")
@login_required
@role_required("member")
def delete(workflow_id):
    service.delete_workflow(current_org().id, workflow_id, current_user.id)
    db.session.commit()
    flash("Deleted the workflow with its versions and runs.", "success")
    return hx_redirect(url_for("workflows.index"))


@bp.post("/<int:workflow_id>/enabled")
@login_required
@role_required("member")
def set_enabled(workflow_id):
    workflow = service.set_enabled(current_org().id, workflow_id, request.form.get("enabled") == "1", current_user.id)
    db.session.commit()
    flash("Enabled the workflow's trigger." if workflow.enabled else "Disabled the workflow's trigger.", "success")
    return hx_redirect(url_for("workflows.detail", workflow_id=workflow_id))


@bp.post("/<int:workflow_id>/webhook-secret")
@login_required
@role_required("member")
def rotate_webhook_secret(workflow_id):
    service.rotate_webhook_token(current_org().id, workflow_id, current_user.id)
    db.session.commit()
    flash("Made a new webhook URL; the old one no longer starts the workflow.", "success")
    return hx_redirect(url_for("workflows.detail", workflow_id=workflow_id))


@bp.post("/<int:workflow_id>/run")
@login_required
@role_required("member")
def run_now(workflow_id):
    """Start a manual run with the optional JSON input from the form, then show it."""
    import json

    service.get_workflow(current_org().id, workflow_id)
    raw = (request.form.get("input") or "").strip()
    try:
        data = json.loads(raw) if raw else {}
        run = run_service.execute_manually(current_org().id, workflow_id, current_user.id, data)
        db.session.commit()
    except ValueError as error:
        flash(f"The input is not valid JSON: {error}.", "error")
        return hx_redirect(url_for("workflows.detail", workflow_id=workflow_id))
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return hx_redirect(url_for("workflows.detail", workflow_id=workflow_id))
    return hx_redirect(url_for("workflows.run_detail", run_id=run.id))


@bp.get("/<int:workflow_id>/versions")
@login_required
@role_required("viewer")
def versions(workflow_id):
    """Every version, and the difference between two (?old=N&new=M)."""
    org = current_org()
    workflow = service.get_workflow(org.id, workflow_id)
    all_versions = service.list_versions(org.id, workflow.id)
    old = request.args.get("old", type=int)
    new = request.args.get("new", type=int)
    diff = None
    if old and new:
        diff = service.diff_versions(org.id, workflow.id, old, new)
    return render_template(
        "workflows/versions.html", workflow=workflow, versions=all_versions, diff=diff, old=old, new=new
    )


@bp.post("/<int:workflow_id>/versions/<int:number>/restore")
@login_required
@role_required("member")
def restore(workflow_id, number):
    workflow = service.restore_version(current_org().id, workflow_id, number, current_user.id)
    db.session.commit()
    flash(f"Restored version {number} as version {workflow.version_number}.", "success")
    return hx_redirect(url_for("workflows.versions", workflow_id=workflow_id))


@bp.get("/runs")
@login_required
@role_required("viewer")
def runs():
    """Runs of every workflow, newest first, with filters and an 'older' link (cursor by id)."""
    org = current_org()
    args = request.args
    filters = run_service.parse_filters(args.get("status"), args.get("trigger"), args.get("since"), args.get("until"))
    workflow_id = args.get("workflow", type=int)
    before = args.get("before", type=int)
    rows = run_service.list_runs(org.id, workflow_id, filters, RUNS_PER_PAGE, before)
    older = rows[RUNS_PER_PAGE - 1].id if len(rows) > RUNS_PER_PAGE else None
    query = {key: value for key, value in args.items() if key != "before" and value}
    context = {
        "runs": rows[:RUNS_PER_PAGE],
        "older_url": url_for("workflows.runs", **query, before=older) if older else None,
        "query": query,
        "workflows": service.list_workflows(org.id),
        "statuses": RUN_STATUSES,
        "trigger_types": TRIGGER_TYPES,
    }
    template = "workflows/_runs_table.html" if is_htmx() else "workflows/runs.html"
    return render_template(template, **context)


@bp.get("/runs/<int:run_id>")
@login_required
@role_required("viewer")
def run_detail(run_id):
    """A run with its step attempts; HTMX polls the status fragment while the run is active."""
    run = run_service.get_run(current_org().id, run_id)
    if is_htmx():
        return render_template("workflows/_run_status.html", run=run)
    return render_template("workflows/run.html", run=run, failed_step=run_service.failed_step(run))


@bp.post("/runs/<int:run_id>/cancel")
@login_required
@role_required("member")
def cancel_run(run_id):
    run_service.get_run(current_org().id, run_id)
    try:
        run_service.cancel_run(current_org().id, run_id)
        db.session.commit()
        flash("Cancelled the run, or asked it to stop before its next step.", "success")
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
    return hx_redirect(url_for("workflows.run_detail", run_id=run_id))


@bp.post("/runs/<int:run_id>/rerun")
@login_required
@role_required("member")
def rerun(run_id):
    run_service.get_run(current_org().id, run_id)
    from_failed = request.form.get("start") == "failed_step"
    try:
        run = run_service.rerun(current_org().id, run_id, current_user.id, from_failed_step=from_failed)
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return hx_redirect(url_for("workflows.run_detail", run_id=run_id))
    return hx_redirect(url_for("workflows.run_detail", run_id=run.id))
