"""Admin console pages for users and organizations; the site-wide pages are in `site_views`."""

import math

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.admin import service
from app.admin.access import admin_required
from app.admin.forms import DeleteUserForm, UserEditForm
from app.auth.forms import EmptyForm
from app.errors import ServiceError
from app.extensions import db
from app.htmx import is_htmx

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/users")
@admin_required
def users():
    """Search, filter, sort and page through the users."""
    filters = _list_filters(("q", "status", "plan", "sort"))
    page = _page_number()

    error = None
    try:
        rows, total = service.search_users(
            filters.get("q", ""),
            filters.get("status", ""),
            filters.get("plan", ""),
            filters.get("sort", "newest"),
            _offset(page),
            service.PAGE_SIZE,
        )
    except ServiceError as problem:
        rows, total, error = [], 0, problem.message

    context = {
        "users": rows,
        "total": total,
        "filters": filters,
        "error": error,
        "statuses": service.USER_STATUSES,
        "plan_names": service.PLANS,
        "sorts": service.USER_SORTS,
        **_pager("admin.users", filters, page, total),
    }
    if is_htmx() and not request.headers.get("HX-History-Restore-Request"):
        return render_template("admin/_users_table.html", **context)
    return render_template("admin/users.html", **context), 400 if error else 200


@bp.get("/users/<int:user_id>")
@admin_required
def user(user_id):
    """Show one user with their organizations, sessions, keys, usage and audit entries."""
    account = service.get_user(user_id)
    form = UserEditForm(obj=account)
    return render_template(
        "admin/user.html",
        **service.user_overview(account),
        form=form,
        button_form=EmptyForm(),
        is_self=_is_self(account),
    )


@bp.post("/users/<int:user_id>")
@admin_required
def update_user(user_id):
    """Save the name, email and admin flag of a user."""
    account = service.get_user(user_id)
    form = UserEditForm()
    if not form.validate_on_submit():
        return _user_page_with_errors(account, form)

    try:
        changes = service.update_user(
            current_user, account, form.name.data, form.email.data, form.is_admin.data, request.remote_addr
        )
    except ServiceError as problem:
        db.session.rollback()
        for field, message in (problem.details or {}).items():
            if field in form:
                form[field].errors = [message]
        flash(problem.message, "error")
        return _user_page_with_errors(account, form)
    db.session.commit()

    flash("Saved: " + ", ".join(sorted(changes)) + "." if changes else "Nothing changed.", "success")
    return redirect(url_for("admin.user", user_id=user_id))


@bp.post("/users/<int:user_id>/deactivate")
@admin_required
def deactivate_user(user_id):
    """Deactivate a user: their sessions and API keys fail from their next request."""
    return _set_active(user_id, False)


@bp.post("/users/<int:user_id>/reactivate")
@admin_required
def reactivate_user(user_id):
    """Reactivate a user; sessions and keys that were not revoked work again."""
    return _set_active(user_id, True)


@bp.get("/users/<int:user_id>/delete")
@admin_required
def confirm_delete_user(user_id):
    """Name everything that deleting the user removes and keeps, and ask for their email to confirm."""
    account = service.get_user(user_id)
    return render_template(
        "admin/delete_user.html", user=account, plan=service.deletion_plan(account), form=DeleteUserForm()
    )


@bp.post("/users/<int:user_id>/delete")
@admin_required
def delete_user(user_id):
    """Delete the user and the organizations only they own, once their email is typed to confirm."""
    account = service.get_user(user_id)
    form = DeleteUserForm()
    email = account.email

    try:
        plan = service.delete_user(current_user, account, form.confirm_email.data or "", request.remote_addr)
    except ServiceError as problem:
        db.session.rollback()
        flash(problem.message, "error")
        return redirect(url_for("admin.confirm_delete_user", user_id=user_id))
    db.session.commit()

    deleted = len(plan["organizations_deleted"])
    flash(f"Deleted {email} and {deleted} organization{'s' if deleted != 1 else ''} only they owned.", "success")
    return redirect(url_for("admin.users"))


@bp.get("/orgs")
@admin_required
def orgs():
    """Search, filter by plan, sort and page through the organizations."""
    filters = _list_filters(("q", "plan", "sort"))
    page = _page_number()

    error = None
    try:
        rows, total = service.search_orgs(
            filters.get("q", ""),
            filters.get("plan", ""),
            filters.get("sort", "newest"),
            _offset(page),
            service.PAGE_SIZE,
        )
    except ServiceError as problem:
        rows, total, error = [], 0, problem.message

    context = {
        "orgs": rows,
        "plans": service.plans_of([org.id for org in rows]),
        "total": total,
        "filters": filters,
        "error": error,
        "plan_names": service.PLANS,
        "sorts": service.ORG_SORTS,
        **_pager("admin.orgs", filters, page, total),
    }
    if is_htmx() and not request.headers.get("HX-History-Restore-Request"):
        return render_template("admin/_orgs_table.html", **context)
    return render_template("admin/orgs.html", **context), 400 if error else 200


@bp.get("/orgs/<int:org_id>")
@admin_required
def org(org_id):
    """Show one organization with its plan, members, usage and audit entries."""
    return render_template("admin/org.html", **service.org_overview(service.get_org(org_id)))


def _set_active(user_id, active):
    account = service.get_user(user_id)

    try:
        changed = service.set_user_active(current_user, account, active, request.remote_addr)
    except ServiceError as problem:
        db.session.rollback()
        flash(problem.message, "error")
        return redirect(url_for("admin.user", user_id=user_id))
    db.session.commit()

    if changed:
        flash(f"{account.email} is {'active again' if active else 'deactivated'}.", "success")
    return redirect(url_for("admin.user", user_id=user_id))


def _user_page_with_errors(account, form):
    db.session.refresh(account)
    context = service.user_overview(account)
    return render_template(
        "admin/user.html", **context, form=form, button_form=EmptyForm(), is_self=_is_self(account)
    ), 422


def _is_self(account):
    return account.id == current_user.id


def _list_filters(names):
    return {name: request.args[name] for name in names if request.args.get(name)}


def _page_number():
    try:
        return max(int(request.args.get("page", 1)), 1)
    except ValueError:
        return 1


def _offset(page):
    return (page - 1) * service.PAGE_SIZE


def _pager(endpoint, filters, page, total):
    pages = max(math.ceil(total / service.PAGE_SIZE), 1)
    return {
        "page": page,
        "pages": pages,
        "previous_url": url_for(endpoint, **filters, page=page - 1) if page > 1 else None,
        "next_url": url_for(endpoint, **filters, page=page + 1) if page < pages else None,
    }


# The site-wide pages register their routes on the same blueprint.
from app.admin import site_views  # noqa: E402,F401
