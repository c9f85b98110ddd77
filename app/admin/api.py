"""JSON routes of the admin console under /api/v1/admin: users, statistics, maintenance mode, queues, audit log.

Only site admins' API keys (or, for reads, an admin's browser session) get through; everyone else
gets 404, as for an unknown route.
"""

import json

from flask import g, jsonify, request
from pydantic import ValidationError as PydanticValidationError

from app.admin import maintenance, queues, service, stats
from app.admin.access import admin_api_required
from app.admin.schemas import (
    CountOut,
    FailedJobPage,
    MaintenanceIn,
    MaintenanceOut,
    QueuesOut,
    StatsOut,
    UserDeletedOut,
    UserDetailOut,
    UserPage,
    UserUpdateIn,
)
from app.api import bp
from app.api.errors import ApiError, pydantic_details
from app.api.openapi import operation
from app.api.pagination import decode_cursor, encode_cursor, parse_limit
from app.extensions import db
from app.timeutil import isoformat

TAG = "admin"
USER_QUERY = [
    ("q", "string", "Only users whose email or name contains this text (case-insensitive)."),
    ("status", "string", "active, disabled or admin."),
    ("plan", "string", "Only users who own an organization on this plan: free, pro or team."),
    ("sort", "string", "newest (default), oldest, email or name."),
    ("limit", "integer", "Users per page, 1 to 500; 50 by default."),
    ("cursor", "string", "The next_cursor of the previous page."),
]


@bp.get("/admin/users")
@operation("List users (site admins only)", response_model=UserPage, query=USER_QUERY, tag=TAG)
@admin_api_required
def admin_list_users():
    """List a page of users matching the filters, with the total and the cursor of the next page."""
    limit = parse_limit()
    offset = _cursor_offset()
    args = request.args

    users, total = service.search_users(
        args.get("q", ""), args.get("status", ""), args.get("plan", ""), args.get("sort", "newest"), offset, limit
    )

    next_offset = offset + len(users)
    next_cursor = encode_cursor([next_offset]) if next_offset < total else None
    return jsonify({"data": [_user_json(user) for user in users], "total": total, "next_cursor": next_cursor})


@bp.get("/admin/users/<int:user_id>")
@operation(
    "Read one user with organizations, sessions, keys, usage and audit entries", response_model=UserDetailOut, tag=TAG
)
@admin_api_required
def admin_get_user(user_id):
    """Return one user in full."""
    return jsonify(_user_detail_json(service.user_overview(service.get_user(user_id))))


@bp.put("/admin/users/<int:user_id>")
@operation(
    "Change a user's name, email, admin flag or active state",
    request_model=UserUpdateIn,
    response_model=UserDetailOut,
    tag=TAG,
)
@admin_api_required
def admin_update_user(user_id):
    """Apply the given fields; `active: false` deactivates the user at once."""
    account = service.get_user(user_id)
    body = _validate(UserUpdateIn, "invalid_user")

    service.update_user(g.user, account, body.name, body.email, body.is_admin, request.remote_addr)
    if body.active is not None:
        service.set_user_active(g.user, account, body.active, request.remote_addr)
    db.session.commit()

    return jsonify(_user_detail_json(service.user_overview(account)))


@bp.delete("/admin/users/<int:user_id>")
@operation(
    "Delete a user and the organizations only they own; `confirm` must repeat the user's email",
    response_model=UserDeletedOut,
    query=[("confirm", "string", "The user's email, to confirm the deletion.")],
    tag=TAG,
)
@admin_api_required
def admin_delete_user(user_id):
    """Delete the user once `confirm` repeats their email; report which organizations went and which stayed."""
    account = service.get_user(user_id)

    plan = service.delete_user(g.user, account, request.args.get("confirm", ""), request.remote_addr)
    db.session.commit()

    return jsonify(
        {
            "deleted_user_id": user_id,
            "organizations_deleted": plan["organizations_deleted"],
            "organizations_kept": plan["organizations_kept"],
        }
    )


@bp.get("/admin/stats")
@operation(
    "Site statistics per UTC day",
    response_model=StatsOut,
    query=[("days", "integer", "Days to cover, 1 to 366, today included; 30 by default.")],
    tag=TAG,
)
@admin_api_required
def admin_stats():
    """Return totals and per-day sign-ups, active users, events, runs and webhook deliveries."""
    return jsonify(stats.site_stats(stats.parse_days(request.args.get("days"))))


@bp.get("/admin/maintenance")
@operation("Read whether maintenance mode is on", response_model=MaintenanceOut, tag=TAG)
@admin_api_required
def admin_get_maintenance():
    """Return the maintenance state."""
    return jsonify(_maintenance_json(maintenance.get_state()))


@bp.post("/admin/maintenance")
@operation("Turn maintenance mode on or off", request_model=MaintenanceIn, response_model=MaintenanceOut, tag=TAG)
@admin_api_required
def admin_set_maintenance():
    """Turn maintenance mode on (with a message and an optional end time) or off."""
    body = _validate(MaintenanceIn, "invalid_maintenance")

    if body.enabled:
        state = maintenance.start(g.user, body.message, body.ends_at, request.remote_addr)
    else:
        maintenance.stop(g.user, request.remote_addr)
        state = None
    db.session.commit()

    return jsonify(_maintenance_json(state))


@bp.get("/admin/queues")
@operation("Count the jobs of each queue, and list the workers", response_model=QueuesOut, tag=TAG)
@admin_api_required
def admin_queues():
    """Return per queue the jobs queued, started, failed, scheduled and deferred, and the workers."""
    return jsonify({"queues": queues.summary(), "workers": queues.workers()})


@bp.get("/admin/queues/<name>/failed")
@operation(
    "List a queue's failed jobs, most recent failure first",
    response_model=FailedJobPage,
    query=[
        ("limit", "integer", "Jobs per page, 1 to 500; 50 by default."),
        ("cursor", "string", "The next_cursor of the previous page."),
    ],
    tag=TAG,
)
@admin_api_required
def admin_failed_jobs(name):
    """Return a page of failed jobs with their errors."""
    limit = parse_limit()
    offset = _cursor_offset()

    jobs, total = queues.failed_jobs(name, offset=offset, per_page=limit)

    next_offset = offset + len(jobs)
    next_cursor = encode_cursor([next_offset]) if next_offset < total else None
    return jsonify({"data": jobs, "total": total, "next_cursor": next_cursor})


@bp.post("/admin/queues/<name>/failed/<job_id>/requeue")
@operation("Requeue one failed job", response_model=CountOut, tag=TAG)
@admin_api_required
def admin_requeue_job(name, job_id):
    queues.requeue(name, job_id)
    _record_queue_action("job.requeued", name, job_id)
    return jsonify({"count": 1})


@bp.delete("/admin/queues/<name>/failed/<job_id>")
@operation("Delete one failed job", response_model=CountOut, tag=TAG)
@admin_api_required
def admin_delete_job(name, job_id):
    queues.delete(name, job_id)
    _record_queue_action("job.deleted", name, job_id)
    return jsonify({"count": 1})


@bp.post("/admin/queues/<name>/failed/requeue")
@operation("Requeue every failed job of a queue", response_model=CountOut, tag=TAG)
@admin_api_required
def admin_requeue_all_jobs(name):
    count = queues.requeue_all(name)
    _record_queue_action("jobs.requeued", name, "", {"count": count})
    return jsonify({"count": count})


@bp.delete("/admin/queues/<name>/failed")
@operation("Delete every failed job of a queue", response_model=CountOut, tag=TAG)
@admin_api_required
def admin_delete_all_jobs(name):
    count = queues.delete_all(name)
    _record_queue_action("jobs.deleted", name, "", {"count": count})
    return jsonify({"count": count})


def _validate(model, code):
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError as error:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON ({error}).") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except PydanticValidationError as error:
        details = pydantic_details(error)
        summary = "; ".join(f"{item['field']}: {item['message']}" for item in details)
        raise ApiError(422, code, f"The request is invalid: {summary}.", details) from None


def _cursor_offset():
    cursor = request.args.get("cursor")
    if not cursor:
        return 0
    [offset] = decode_cursor(cursor, 1)
    if not isinstance(offset, int) or offset < 0:
        raise ApiError(
            400, "invalid_cursor", "The cursor is invalid. Use the next_cursor of a previous page, unchanged."
        )
    return offset


def _record_queue_action(action, queue_name, job_id, details=None):
    service.record(
        action,
        actor=g.user,
        target_type="job" if job_id else "queue",
        target_id=job_id or queue_name,
        details={"queue": queue_name, **(details or {})},
        ip_address=request.remote_addr,
    )
    db.session.commit()


def _user_json(user):
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "is_admin": user.is_admin,
        "active": user.active,
        "created_at": isoformat(user.created_at),
    }


def _user_detail_json(overview):
    return {
        **_user_json(overview["user"]),
        "organizations": overview["organizations"],
        "sessions": [
            {
                "id": item.id,
                "user_agent": item.user_agent,
                "ip_address": item.ip_address,
                "created_at": isoformat(item.created_at),
                "last_seen_at": isoformat(item.last_seen_at),
            }
            for item in overview["sessions"]
        ],
        "api_keys": [
            {
                "id": key.id,
                "name": key.name,
                "prefix": key.prefix,
                "org_id": key.org_id,
                "created_at": isoformat(key.created_at),
                "last_used_at": isoformat(key.last_used_at),
                "revoked": key.is_revoked,
            }
            for key in overview["keys"]
        ],
        "usage": overview["usage"],
        "audit": [audit_entry_json(entry) for entry in overview["audit"]],
    }


def audit_entry_json(entry):
    return {
        "id": entry.id,
        "action": entry.action,
        "actor_id": entry.actor_id,
        "actor_email": entry.actor_email,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "org_id": entry.org_id,
        "details": entry.details,
        "ip_address": entry.ip_address,
        "created_at": isoformat(entry.created_at),
    }


def _maintenance_json(state):
    return state.to_json() if state is not None else {"enabled": False}
