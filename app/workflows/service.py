"""Workflows and their versions: create, update, delete, list, diff, restore, export and import.

Runs live in app.workflows.runs, triggers in app.workflows.triggers. Every query is scoped by
organization; objects of another organization are "not found".
"""

import difflib
import json
import logging
import secrets

from app.audit.service import record_change
from app.billing.limits import check_workflow_count
from app.errors import NotFound, ValidationError
from app.extensions import db
from app.timeutil import utcnow
from app.workflows.models import Workflow, WorkflowVersion
from app.workflows.schemas import validate_definition

logger = logging.getLogger(__name__)


def list_workflows(org_id):
    return db.session.scalars(
        db.select(Workflow).where(Workflow.org_id == org_id).order_by(Workflow.name, Workflow.id)
    ).all()


def get_workflow(org_id, workflow_id):
    workflow = db.session.scalar(db.select(Workflow).where(Workflow.org_id == org_id, Workflow.id == workflow_id))
    if workflow is None:
        raise NotFound(f"Workflow {workflow_id} was not found in this organization.")
    return workflow


def _apply_definition(workflow, definition):
    workflow.name = definition["name"]
    workflow.description = definition.get("description", "")
    workflow.trigger_type = definition["trigger"]["type"]
    workflow.definition = definition
    if workflow.trigger_type == "webhook" and not workflow.webhook_token:
        workflow.webhook_token = secrets.token_urlsafe(32)
    if workflow.trigger_type == "schedule":
        # A new or changed schedule fires from now on, never for times before the save.
        workflow.schedule_checked_until = utcnow()


def _add_version(workflow, definition, user_id, note):
    version = WorkflowVersion(
        org_id=workflow.org_id,
        workflow_id=workflow.id,
        number=workflow.version_number,
        definition=definition,
        note=(note or "")[:500],
        created_by_id=user_id,
    )
    db.session.add(version)
    db.session.flush()
    workflow.current_version_id = version.id
    return version


def create_workflow(org_id, user_id, definition, note="", suggestion_id=None):
    """Validate and save a new workflow with its first version.

    With `suggestion_id`, the suggestion it came from is marked accepted in the same transaction.
    """
    check_workflow_count(org_id)
    definition = validate_definition(definition)
    suggestion = _open_suggestion(org_id, suggestion_id) if suggestion_id is not None else None
    workflow = Workflow(org_id=org_id, created_by_id=user_id, version_number=1)
    _apply_definition(workflow, definition)
    db.session.add(workflow)
    db.session.flush()
    _add_version(workflow, definition, user_id, note or ("Created from a suggestion" if suggestion else "Created"))
    if suggestion is not None:
        _accept_suggestion(suggestion, user_id)
    details = {"name": workflow.name, "version": workflow.version_number}
    if suggestion is not None:
        details["suggestion_id"] = suggestion.id
    _record(workflow, "workflow.created", user_id, details)
    logger.info("workflow created org=%s workflow=%s user=%s", org_id, workflow.id, user_id)
    return workflow


def update_workflow(org_id, workflow_id, user_id, definition, note=""):
    """Validate and save a definition as the workflow's next version."""
    workflow = _save_version(org_id, workflow_id, user_id, definition, note)
    _record(workflow, "workflow.updated", user_id, {"name": workflow.name, "version": workflow.version_number})
    return workflow


def _save_version(org_id, workflow_id, user_id, definition, note):
    workflow = get_workflow(org_id, workflow_id)
    definition = validate_definition(definition)
    previous_trigger = json.dumps(workflow.definition.get("trigger"), sort_keys=True)
    workflow.version_number += 1
    schedule_checked_until = workflow.schedule_checked_until
    _apply_definition(workflow, definition)
    if json.dumps(definition["trigger"], sort_keys=True) == previous_trigger and schedule_checked_until:
        workflow.schedule_checked_until = schedule_checked_until
    workflow.updated_at = utcnow()
    version = _add_version(workflow, definition, user_id, note)
    logger.info("workflow saved org=%s workflow=%s version=%s user=%s", org_id, workflow.id, version.number, user_id)
    return workflow


def set_enabled(org_id, workflow_id, enabled, user_id=None):
    """Turn the workflow's trigger on or off; a change is recorded in the audit log."""
    workflow = get_workflow(org_id, workflow_id)
    if workflow.enabled == bool(enabled):
        return workflow
    workflow.enabled = bool(enabled)
    workflow.updated_at = utcnow()
    action = "workflow.enabled" if workflow.enabled else "workflow.disabled"
    _record(workflow, action, user_id, {"name": workflow.name, "version": workflow.version_number})
    return workflow


def delete_workflow(org_id, workflow_id, user_id=None):
    workflow = get_workflow(org_id, workflow_id)
    _record(workflow, "workflow.deleted", user_id, {"name": workflow.name, "version": workflow.version_number})
    db.session.delete(workflow)
    logger.info("workflow deleted org=%s workflow=%s", org_id, workflow_id)


def rotate_webhook_token(org_id, workflow_id, user_id=None):
    """Replace the secret of the incoming webhook URL; the old URL stops working at once."""
    workflow = get_workflow(org_id, workflow_id)
    if workflow.trigger_type != "webhook":
        raise ValidationError("Only workflows with a webhook trigger have a webhook URL.")
    workflow.webhook_token = secrets.token_urlsafe(32)
    # The entry names the workflow only: the token is the secret part of the URL.
    _record(workflow, "workflow.webhook_secret_rotated", user_id, {"name": workflow.name})
    logger.info("webhook secret rotated org=%s workflow=%s", org_id, workflow_id)
    return workflow


def list_versions(org_id, workflow_id):
    workflow = get_workflow(org_id, workflow_id)
    return db.session.scalars(
        db.select(WorkflowVersion)
        .where(WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.org_id == org_id)
        .order_by(WorkflowVersion.number.desc())
    ).all()


def get_version(org_id, workflow_id, number):
    version = db.session.scalar(
        db.select(WorkflowVersion).where(
            WorkflowVersion.org_id == org_id,
            WorkflowVersion.workflow_id == workflow_id,
            WorkflowVersion.number == number,
        )
    )
    if version is None:
        raise NotFound(f"Version {number} of workflow {workflow_id} was not found.")
    return version


def pretty(definition):
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False)


def diff_versions(org_id, workflow_id, old_number, new_number):
    """Return a unified diff (a list of lines) between two versions' pretty-printed definitions."""
    old = get_version(org_id, workflow_id, old_number)
    new = get_version(org_id, workflow_id, new_number)
    return list(
        difflib.unified_diff(
            pretty(old.definition).splitlines(),
            pretty(new.definition).splitlines(),
            fromfile=f"version {old.number}",
            tofile=f"version {new.number}",
            lineterm="",
        )
    )


def restore_version(org_id, workflow_id, number, user_id):
    """Save an old version's definition as a new version."""
    version = get_version(org_id, workflow_id, number)
    workflow = _save_version(org_id, workflow_id, user_id, version.definition, f"Restored version {number}")
    details = {"name": workflow.name, "version": workflow.version_number, "restored_version": number}
    _record(workflow, "workflow.version_restored", user_id, details)
    return workflow


def _record(workflow, action, user_id, details):
    record_change(action, workflow.org_id, user_id, "workflow", workflow.id, details)


def export_definition(workflow):
    """The definition as a file to download: the document only, no ids, secrets or webhook URL."""
    return pretty(workflow.definition) + "\n"


def parse_import(raw):
    """Parse an uploaded definition file, or raise a 422 that says what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(
                "The file is not UTF-8 text; export a workflow as JSON and import that file."
            ) from None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ValidationError(
            f"The file is not valid JSON: {error}.", [{"field": "definition", "message": str(error)}]
        ) from None


def _open_suggestion(org_id, suggestion_id):
    from app.insights.models import Suggestion

    suggestion = db.session.scalar(
        db.select(Suggestion).where(Suggestion.org_id == org_id, Suggestion.id == suggestion_id)
    )
    if suggestion is None:
        raise NotFound(f"Suggestion {suggestion_id} was not found in this organization.")
    return suggestion


def suggestion_draft(org_id, suggestion_id):
    """The workflow draft of a suggestion, to open in the editor."""
    suggestion = _open_suggestion(org_id, suggestion_id)
    return dict(suggestion.workflow_draft or {})


def _accept_suggestion(suggestion, user_id):
    from app.insights import service as insights_service

    accept = getattr(insights_service, "accept_suggestion", None)
    if accept is not None:
        accept(suggestion.org_id, suggestion.id, user_id)
        return
    # NOTE: the insights service has no accept function yet, so the decision is recorded here.
    suggestion.status = "accepted"
    suggestion.decided_at = utcnow()
    suggestion.decided_by_id = user_id
    suggestion.updated_at = utcnow()
