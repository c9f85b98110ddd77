"""JSON routes for organizations and their members.

"current" is the API key's organization, or for a read with the session cookie the organization
chosen in the session.
"""

from typing import Literal

from flask import g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError, pydantic_details
from app.api.openapi import operation
from app.extensions import db
from app.orgs import invitations, service
from app.orgs.access import current_membership, role_required
from app.orgs.models import Organization
from app.timeutil import isoformat, utcnow

TAG = "organizations"
Role = Literal["owner", "admin", "member", "viewer"]


class OrgOut(BaseModel):
    id: int
    name: str
    personal: bool
    role: Role = Field(description="The caller's role in the organization.")
    created_at: str


class OrgListResponse(BaseModel):
    data: list[OrgOut]


class OrgRename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=service.MAX_NAME_LENGTH)


class MemberOut(BaseModel):
    user_id: int
    email: str
    name: str
    role: Role
    joined_at: str


class MemberListResponse(BaseModel):
    data: list[MemberOut]


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class InvitationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254)
    role: Role = "member"


class InvitationOut(BaseModel):
    """An invitation. The token is only in the emailed link, so it is never returned."""

    id: int
    email: str
    role: Role
    status: Literal["pending", "accepted", "revoked", "expired"]
    invited_by_user_id: int | None
    created_at: str
    expires_at: str


class InvitationListResponse(BaseModel):
    data: list[InvitationOut]


def _body(model):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_json", "The request body must be a JSON object with Content-Type: application/json."
        )
    try:
        return model.model_validate(body)
    except PydanticValidationError as error:
        raise ApiError(
            422, "validation_error", "The request body is invalid; see details.", pydantic_details(error)
        ) from error


def _current():
    return db.session.get(Organization, g.org_id)


def _org_json(org, role):
    return OrgOut(
        id=org.id, name=org.name, personal=org.personal, role=role, created_at=isoformat(org.created_at)
    ).model_dump()


def _member_json(membership, user):
    return MemberOut(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=membership.role,
        joined_at=isoformat(membership.created_at),
    ).model_dump()


def _invitation_json(invitation):
    return InvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        status=invitation.status(utcnow()),
        invited_by_user_id=invitation.invited_by_id,
        created_at=isoformat(invitation.created_at),
        expires_at=isoformat(invitation.expires_at),
    ).model_dump()


@bp.get("/orgs")
@operation("List the caller's organizations with their role in each", response_model=OrgListResponse, tag=TAG)
@api_auth_required
def list_orgs():
    memberships = service.memberships_of(g.user)
    return jsonify({"data": [_org_json(m.organization, m.role) for m in memberships]})


@bp.get("/orgs/current")
@operation("The API key's organization", response_model=OrgOut, tag=TAG)
@api_auth_required
@role_required("viewer")
def get_current_org():
    return jsonify(_org_json(_current(), current_membership().role))


@bp.patch("/orgs/current")
@operation("Rename the API key's organization", request_model=OrgRename, response_model=OrgOut, tag=TAG)
@api_auth_required
@role_required("admin")
def rename_current_org():
    body = _body(OrgRename)
    org = service.rename_org(g.user, _current(), body.name, request.remote_addr or "")
    db.session.commit()
    return jsonify(_org_json(org, current_membership().role))


@bp.get("/orgs/current/members")
@operation("List the members of the organization with their roles", response_model=MemberListResponse, tag=TAG)
@api_auth_required
@role_required("viewer")
def list_current_members():
    return jsonify({"data": [_member_json(m, u) for m, u in service.list_members(g.org_id)]})


@bp.patch("/orgs/current/members/<int:user_id>")
@operation("Change a member's role", request_model=MemberUpdate, response_model=MemberOut, tag=TAG)
@api_auth_required
@role_required("admin")
def update_member(user_id):
    body = _body(MemberUpdate)
    membership = service.change_role(
        g.user, current_membership().role, _current(), user_id, body.role, request.remote_addr or ""
    )
    db.session.commit()
    return jsonify(_member_json(membership, membership.user))


@bp.delete("/orgs/current/members/<int:user_id>")
@operation("Remove a member from the organization", status=204, tag=TAG)
@api_auth_required
@role_required("admin")
def delete_member(user_id):
    service.remove_member(g.user, current_membership().role, _current(), user_id, request.remote_addr or "")
    db.session.commit()
    return "", 204


@bp.get("/orgs/current/invitations")
@operation("List pending invitations", response_model=InvitationListResponse, tag=TAG)
@api_auth_required
@role_required("admin")
def list_current_invitations():
    return jsonify({"data": [_invitation_json(item) for item in invitations.list_pending(g.org_id)]})


@bp.post("/orgs/current/invitations")
@operation(
    "Invite someone by email; the link goes out by mail",
    request_model=InvitationCreate,
    response_model=InvitationOut,
    status=201,
    tag=TAG,
)
@api_auth_required
@role_required("admin")
def create_current_invitation():
    body = _body(InvitationCreate)
    invitation, raw = invitations.create_invitation(
        g.user, current_membership().role, _current(), body.email, body.role, request.remote_addr or ""
    )
    invitations.send_invitation(invitation, url_for("orgs.invitation", token=raw, _external=True))
    db.session.commit()
    response = jsonify(_invitation_json(invitation))
    response.status_code = 201
    return response


@bp.delete("/orgs/current/invitations/<int:invitation_id>")
@operation("Revoke a pending invitation", status=204, tag=TAG)
@api_auth_required
@role_required("admin")
def revoke_current_invitation(invitation_id):
    invitations.revoke_invitation(g.user, _current(), invitation_id, request.remote_addr or "")
    db.session.commit()
    return "", 204
