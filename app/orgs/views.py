"""Pages to create, switch, rename and delete organizations, and to manage their members.

Views that change something post, then redirect with a flashed message. A rejected change renders
its page again with the error's status (403, 404, 409, 422, or 402 past the plan's member limit).
"""

from flask import Blueprint, flash, g, render_template, request, session, url_for
from flask_login import current_user, login_required

from app.auth.views import safe_next
from app.errors import ServiceError, ValidationError
from app.extensions import db
from app.htmx import hx_redirect
from app.orgs import invitations, service
from app.orgs.access import current_membership, role_allows, role_required
from app.orgs.models import ROLES
from app.orgs.service import current_org
from app.timeutil import utcnow

bp = Blueprint("orgs", __name__)


@bp.app_context_processor
def inject_org_switcher():
    def org_switcher():
        """Return the signed-in user's memberships for the top bar, each with whether it is the current one."""
        if not current_user.is_authenticated:
            return []
        org = current_org()
        memberships = g.get("memberships")
        if memberships is None:
            memberships = service.memberships_of(current_user)
        return [(membership, org is not None and membership.org_id == org.id) for membership in memberships]

    def can(role):
        """Return whether the signed-in user's role in the current organization includes `role`.

        Pages use it to hide actions the role decorators would reject; the decorators still decide.
        """
        if not current_user.is_authenticated:
            return False
        current_org()
        membership = g.get("membership")
        return membership is not None and role_allows(membership.role, role)

    return {"org_switcher": org_switcher, "can": can}


def _client_address():
    return request.remote_addr or ""


def _render_error(error, page):
    """Roll back, flash the error, and render `page` ("members" or "settings") with its status."""
    db.session.rollback()
    flash(error.message, "error")
    render = _render_members if page == "members" else _render_settings
    return render(status=error.status)


def _render_members(status=200):
    org = current_org()
    membership = current_membership()
    can_manage = role_allows(membership.role, "admin")
    return (
        render_template(
            "orgs/members.html",
            org=org,
            membership=membership,
            members=service.list_members(org.id),
            invitations=invitations.list_pending(org.id) if can_manage else [],
            can_manage=can_manage,
            is_owner=membership.role == "owner",
            roles=ROLES,
        ),
        status,
    )


def _render_settings(status=200):
    org = current_org()
    return render_template("orgs/settings.html", org=org, membership=current_membership()), status


# The organization


@bp.route("/orgs/new", methods=["GET", "POST"])
@login_required
def create():
    """Create an organization owned by the signed-in user and switch to it."""
    if request.method == "GET":
        return render_template("orgs/new.html", name="")

    try:
        org = service.create_org(current_user, request.form.get("name", ""), _client_address())
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return render_template("orgs/new.html", name=request.form.get("name", "")), error.status

    service.choose_org(current_user, org.id)
    db.session.commit()
    flash(f"Created {org.name}. Invite people from the Members page.", "success")
    return hx_redirect(url_for("orgs.members"))


@bp.post("/orgs/switch")
@login_required
def switch():
    """Work in another of the user's organizations from now on."""
    org_id = request.form.get("org_id", type=int)
    if org_id is None:
        raise ValidationError("Choose an organization to switch to.", {"org_id": "missing"})

    membership = service.membership_in(current_user, org_id)

    service.choose_org(current_user, membership.org_id)
    db.session.commit()
    flash(f"You are now working in {membership.organization.name}.", "success")
    return hx_redirect(safe_next(request.form.get("next")) or url_for("insights.dashboard"))


@bp.get("/org/settings")
@login_required
@role_required("viewer")
def settings():
    """Show the current organization's name, and how to leave or delete it."""
    return _render_settings()


@bp.post("/org/rename")
@login_required
@role_required("admin")
def rename():
    try:
        org = service.rename_org(current_user, current_org(), request.form.get("name", ""), _client_address())
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "settings")
    flash(f"The organization is now called {org.name}.", "success")
    return hx_redirect(url_for("orgs.settings"))


@bp.post("/org/delete")
@login_required
@role_required("owner")
def delete():
    """Delete the current organization and all its data, once its name is typed."""
    org = current_org()
    org_id, name = org.id, org.name
    try:
        storage_keys = service.delete_org(current_user, org, request.form.get("confirm_name", ""), _client_address())
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "settings")

    # Stored bytes go only after the rows are gone, so a failed commit leaves every file readable.
    service.delete_stored_files(org_id, storage_keys)
    session.pop("org_id", None)
    flash(f"Deleted {name} and its data.", "success")
    return hx_redirect(url_for("insights.dashboard"))


@bp.post("/org/leave")
@login_required
def leave():
    """Leave the current organization; any member may, except its last owner."""
    org = current_org()
    try:
        service.leave_org(current_user, org, _client_address())
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "settings")
    session.pop("org_id", None)
    flash(f"You left {org.name}.", "success")
    return hx_redirect(url_for("insights.dashboard"))


# Members and invitations


@bp.get("/org/members")
@login_required
@role_required("viewer")
def members():
    """List the current organization's members with their roles, and pending invitations for admins."""
    return _render_members()


@bp.post("/org/invitations")
@login_required
@role_required("admin")
def invite():
    """Invite someone by email with a role; the link goes out by mail."""
    try:
        invitation, raw = invitations.create_invitation(
            current_user,
            current_membership().role,
            current_org(),
            request.form.get("email", ""),
            request.form.get("role", ""),
            _client_address(),
        )
        invitations.send_invitation(invitation, url_for("orgs.invitation", token=raw, _external=True))
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "members")
    flash(f"Invitation sent to {invitation.email}.", "success")
    return hx_redirect(url_for("orgs.members"))


@bp.post("/org/invitations/<int:invitation_id>/revoke")
@login_required
@role_required("admin")
def revoke_invitation(invitation_id):
    try:
        invitation = invitations.revoke_invitation(current_user, current_org(), invitation_id, _client_address())
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "members")
    flash(f"Revoked the invitation for {invitation.email}.", "success")
    return hx_redirect(url_for("orgs.members"))


@bp.post("/org/members/<int:user_id>/role")
@login_required
@role_required("admin")
def change_role(user_id):
    try:
        membership = service.change_role(
            current_user,
            current_membership().role,
            current_org(),
            user_id,
            request.form.get("role", ""),
            _client_address(),
        )
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "members")
    flash(f"{membership.user.email} is now {membership.role}.", "success")
    return hx_redirect(url_for("orgs.members"))


@bp.post("/org/members/<int:user_id>/remove")
@login_required
@role_required("admin")
def remove_member(user_id):
    try:
        service.remove_member(current_user, current_membership().role, current_org(), user_id, _client_address())
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "members")
    flash("Member removed.", "success")
    return hx_redirect(url_for("orgs.members"))


@bp.post("/org/transfer")
@login_required
@role_required("owner")
def transfer():
    """Make another member the owner; you stay on as an admin."""
    user_id = request.form.get("user_id", type=int)
    try:
        if user_id is None:
            raise ValidationError("Choose the member who becomes the owner.", {"user_id": "missing"})
        target = service.transfer_ownership(current_user, current_org(), user_id, _client_address())
        db.session.commit()
    except ServiceError as error:
        return _render_error(error, "members")
    flash(f"{target.user.email} now owns {current_org().name}; you are an admin.", "success")
    return hx_redirect(url_for("orgs.members"))


# Accepting an invitation


@bp.get("/invitations/accept")
def invitation():
    """Show an invitation from its emailed link; a signed-out visitor signs in or signs up first."""
    token = request.args.get("token", "")
    try:
        found = invitations.find_invitation(token)
        invitations.check_usable(found)
    except ServiceError as error:
        return render_template("orgs/invitation.html", error=error.message, invitation=None), error.status

    invitation_path = url_for("orgs.invitation", token=token)
    return render_template(
        "orgs/invitation.html",
        error=None,
        invitation=found,
        token=token,
        signin_url=url_for("auth.signin", next=invitation_path),
        signup_url=url_for("auth.signup", next=invitation_path),
        email_matches=current_user.is_authenticated and current_user.email == found.email,
        now=utcnow(),
    )


@bp.post("/invitations/accept")
@login_required
def accept_invitation():
    """Join the organization of the invitation as the signed-in user, and switch to it."""
    token = request.form.get("token", "")
    try:
        membership = invitations.accept_invitation(current_user, token, _client_address())
        service.choose_org(current_user, membership.org_id)
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        return render_template("orgs/invitation.html", error=error.message, invitation=None), error.status

    flash(f"You joined {membership.organization.name} as {membership.role}.", "success")
    return hx_redirect(url_for("insights.dashboard"))
