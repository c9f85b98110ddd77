"""Admin console pages for the whole site: overview, statistics, audit log, maintenance mode and queues."""

import json

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.admin import maintenance, queues, service, stats
from app.admin.access import admin_required
from app.admin.forms import MaintenanceForm
from app.admin.views import bp
from app.auth.forms import EmptyForm
from app.errors import ServiceError
from app.extensions import db
from app.security import allow_inline_styles


@bp.get("/")
@bp.get("")
@admin_required
def index():
    """Show the site's totals, the maintenance switch and the queues at a glance."""
    state = maintenance.get_state()
    form = MaintenanceForm(message=state.message if state else "")
    return render_template(
        "admin/index.html",
        totals=stats.site_stats(days=1)["totals"],
        queues=queues.summary(),
        state=state,
        form=form,
        button_form=EmptyForm(),
    )


@bp.post("/maintenance")
@admin_required
def start_maintenance():
    """Turn maintenance mode on, or change its message and end time."""
    form = MaintenanceForm()
    if not form.validate_on_submit():
        flash("The maintenance message is too long; use at most 500 characters.", "error")
        return redirect(url_for("admin.index"))

    try:
        maintenance.start(
            current_user, form.message.data, maintenance.parse_end_time(form.ends_at.data), request.remote_addr
        )
    except ServiceError as problem:
        db.session.rollback()
        flash(problem.message, "error")
        return redirect(url_for("admin.index"))
    db.session.commit()

    flash("Maintenance mode is on: everyone but site admins can only read.", "success")
    return redirect(url_for("admin.index"))


@bp.post("/maintenance/end")
@admin_required
def end_maintenance():
    """Turn maintenance mode off."""
    if maintenance.stop(current_user, request.remote_addr):
        db.session.commit()
        flash("Maintenance mode is off.", "success")
    return redirect(url_for("admin.index"))


@bp.get("/stats")
@admin_required
@allow_inline_styles
def site_stats():
    """Chart sign-ups, active users, events, runs and webhooks per day."""
    try:
        days = stats.parse_days(request.args.get("days"))
    except ServiceError as problem:
        flash(problem.message, "error")
        days = stats.DEFAULT_DAYS
    data = stats.site_stats(days)
    return render_template(
        "admin/stats.html", data=data, figures=_figures(data["series"], data["revenue_by_plan"]), days=days
    )


@bp.get("/audit")
@admin_required
def audit():
    """List the audit log across the site, newest first, with filters by action and target."""
    filters = {name: request.args[name] for name in ("action", "target_type", "target_id") if request.args.get(name)}
    before = request.args.get("before", type=int)
    entries, has_more = service.list_audit_entries(
        filters.get("action", ""),
        None,
        filters.get("target_type", ""),
        filters.get("target_id", ""),
        before,
        service.PAGE_SIZE,
    )
    older_url = url_for("admin.audit", **filters, before=entries[-1].id) if has_more else None
    return render_template("admin/audit.html", entries=entries, filters=filters, older_url=older_url)


@bp.get("/queues")
@admin_required
def queue_list():
    """Show each queue's counts and the workers with what they are running."""
    return render_template("admin/queues.html", queues=queues.summary(), workers=queues.workers())


@bp.get("/queues/<name>/failed")
@admin_required
def failed_jobs(name):
    """Page through a queue's failed jobs, most recent failure first."""
    page = max(request.args.get("page", 1, type=int), 1)
    jobs, total = queues.failed_jobs(name, (page - 1) * queues.FAILED_PAGE_SIZE, queues.FAILED_PAGE_SIZE)
    pages = max(-(-total // queues.FAILED_PAGE_SIZE), 1)
    return render_template(
        "admin/failed_jobs.html",
        name=name,
        jobs=jobs,
        total=total,
        page=page,
        pages=pages,
        previous_url=url_for("admin.failed_jobs", name=name, page=page - 1) if page > 1 else None,
        next_url=url_for("admin.failed_jobs", name=name, page=page + 1) if page < pages else None,
        button_form=EmptyForm(),
    )


@bp.post("/queues/<name>/failed/<job_id>/requeue")
@admin_required
def requeue_job(name, job_id):
    """Put one failed job back on its queue."""
    queues.requeue(name, job_id)
    _record_queue_action("job.requeued", name, job_id)
    flash(f"Job {job_id} is queued again.", "success")
    return redirect(url_for("admin.failed_jobs", name=name, page=request.args.get("page", 1, type=int)))


@bp.post("/queues/<name>/failed/<job_id>/delete")
@admin_required
def delete_job(name, job_id):
    """Delete one failed job."""
    queues.delete(name, job_id)
    _record_queue_action("job.deleted", name, job_id)
    flash(f"Job {job_id} is deleted.", "success")
    return redirect(url_for("admin.failed_jobs", name=name, page=request.args.get("page", 1, type=int)))


@bp.post("/queues/<name>/failed/requeue")
@admin_required
def requeue_all_jobs(name):
    """Requeue every failed job of a queue."""
    count = queues.requeue_all(name)
    _record_queue_action("jobs.requeued", name, "", {"count": count})
    flash(f"{count} failed jobs are queued again.", "success")
    return redirect(url_for("admin.failed_jobs", name=name))


@bp.post("/queues/<name>/failed/delete")
@admin_required
def delete_all_jobs(name):
    """Delete every failed job of a queue."""
    count = queues.delete_all(name)
    _record_queue_action("jobs.deleted", name, "", {"count": count})
    flash(f"{count} failed jobs are deleted.", "success")
    return redirect(url_for("admin.failed_jobs", name=name))


def _record_queue_action(action, queue_name, job_id, details=None):
    service.record(
        action,
        actor=current_user,
        target_type="job" if job_id else "queue",
        target_id=job_id or queue_name,
        details={"queue": queue_name, **(details or {})},
        ip_address=request.remote_addr,
    )
    db.session.commit()


def _figures(series, revenue):
    """Build the plotly figures (as JSON text for data-figure attributes) of the statistics page."""
    days = [row["day"] for row in series]

    def bar(title, name, values):
        return json.dumps(
            {
                "data": [{"type": "bar", "name": name, "x": days, "y": values}],
                "layout": {"title": {"text": title}, "height": 280, "margin": {"t": 40, "l": 40, "r": 10, "b": 40}},
            }
        )

    figures = {
        "signups": bar("Sign-ups per day", "sign-ups", [row["signups"] for row in series]),
        "active_users": bar("Active users per day", "active users", [row["active_users"] for row in series]),
        "events": bar("Events per day", "events", [row["events"] for row in series]),
        "runs": json.dumps(
            {
                "data": [
                    {"type": "bar", "name": "runs", "x": days, "y": [row["runs"] for row in series]},
                    {"type": "bar", "name": "failed", "x": days, "y": [row["failed_runs"] for row in series]},
                ],
                "layout": {
                    "title": {"text": "Workflow runs per day"},
                    "barmode": "overlay",
                    "height": 280,
                    "margin": {"t": 40, "l": 40, "r": 10, "b": 40},
                },
            }
        ),
    }
    if series and series[0]["webhooks"] is not None:
        figures["webhooks"] = bar("Webhook deliveries per day", "deliveries", [row["webhooks"] for row in series])
    if revenue:
        figures["revenue"] = json.dumps(
            {
                "data": [
                    {
                        "type": "bar",
                        "name": "paid",
                        "x": [f"{row['plan']} ({row['currency'].upper()})" for row in revenue],
                        "y": [row["amount_paid"] / 100 for row in revenue],
                    }
                ],
                "layout": {
                    "title": {"text": "Revenue by plan"},
                    "height": 280,
                    "margin": {"t": 40, "l": 40, "r": 10, "b": 40},
                },
            }
        )
    return figures
