"""The identity behind a request (`/me`) and the organization's API keys."""

from flask import g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError, pydantic_details
from app.api.openapi import operation
from app.auth import service as auth_service
from app.auth.scopes import DEFAULT_SCOPES, MAX_EXPIRY_DAYS
from app.extensions import db
from app.orgs.access import current_membership, role_allows, role_required
from app.timeutil import isoformat


class MeResponse(BaseModel):
    user_id: int
    email: str
    name: str
    org_id: int
    api_key_prefix: str | None


@bp.get("/me")
@operation("The user and organization the request acts for", response_model=MeResponse, tag="account")
@api_auth_required
@role_required("viewer")
def me():
    """The user and organization behind the key (or the browser session)."""
    return jsonify(
        MeResponse(
            user_id=g.user.id,
            email=g.user.email,
            name=g.user.name,
            org_id=g.org_id,
            api_key_prefix=g.api_key.prefix if g.api_key else None,
        ).model_dump()
    )


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it; the key itself is never shown again.")
    scopes: list[str] = Field(description="A subset of read, write and admin.")
    user_id: int
    created_at: str
    expires_at: str | None = Field(description="None for a key that never expires.")
    last_used_at: str | None = Field(description="Updated at most once a minute.")
    revoked_at: str | None


class ApiKeyPage(BaseModel):
    data: list[ApiKeyOut]


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default=list(DEFAULT_SCOPES), description="A subset of read, write and admin.")
    expires_in_days: int | None = Field(
        default=None, ge=1, le=MAX_EXPIRY_DAYS, description="Days until the key expires; null for never."
    )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The raw key. It is returned only in this response.")


def api_key_json(api_key):
    return ApiKeyOut(
        id=api_key.id,
        name=api_key.name,
        prefix=api_key.prefix,
        scopes=api_key.scope_list,
        user_id=api_key.user_id,
        created_at=isoformat(api_key.created_at),
        expires_at=isoformat(api_key.expires_at) if api_key.expires_at else None,
        last_used_at=isoformat(api_key.last_used_at) if api_key.last_used_at else None,
        revoked_at=isoformat(api_key.revoked_at) if api_key.revoked_at else None,
    ).model_dump()


def _manages_keys():
    """Return whether the request may see and revoke every key of the organization.

    That needs the admin role, and through a key also the admin scope.
    """
    if not role_allows(current_membership().role, "admin"):
        return False
    return g.api_key is None or g.api_key.has_scope("admin")


@bp.get("/api-keys")
@operation(
    "List your API keys in the organization; admins list every user's with all=1",
    response_model=ApiKeyPage,
    query=[("all", "string", "1 lists every key of the organization (admin role and, for a key, admin scope).")],
    tag="account",
)
@api_auth_required
@role_required("viewer")
def list_api_keys():
    """List the caller's keys in the organization, newest first, or every user's with ?all=1 for admins."""
    all_users = request.args.get("all") in ("1", "true")
    if all_users and not _manages_keys():
        raise ApiError(
            403,
            "forbidden",
            "Listing every key of the organization needs the admin role, and an API key with the admin scope.",
        )
    keys = auth_service.list_api_keys(g.user, g.org_id, all_users=all_users)
    return jsonify({"data": [api_key_json(api_key) for api_key in keys]})


@bp.post("/api-keys")
@operation(
    "Create an API key for yourself (admin role and scope); the answer has the key, shown only once",
    request_model=ApiKeyIn,
    response_model=ApiKeyCreated,
    status=201,
    tag="account",
)
@api_auth_required
@role_required("admin")
def create_api_key():
    """Create a key for the caller, with scopes up to the caller's role.

    Through the API this needs the admin role and a key with the admin scope, so that a leaked
    read or write key cannot mint further keys that outlive its revocation. Viewers and members
    create their keys on the settings page.
    """
    data = request.get_json(silent=True)
    try:
        body = ApiKeyIn.model_validate(data if isinstance(data, dict) else {})
    except PydanticValidationError as error:
        raise ApiError(422, "validation_error", "The API key request is invalid.", pydantic_details(error)) from error

    raw, api_key = auth_service.create_api_key(
        g.user,
        g.org_id,
        body.name,
        scopes=body.scopes,
        expires_in_days=body.expires_in_days,
        ip_address=request.remote_addr or "",
    )

    db.session.commit()
    response = jsonify({**api_key_json(api_key), "key": raw})
    return response, 201, {"Location": url_for("api.list_api_keys")}


@bp.delete("/api-keys/<int:key_id>")
@operation("Revoke any API key of the organization (admin role and scope)", status=204, tag="account")
@api_auth_required
@role_required("admin")
def revoke_api_key(key_id):
    """Revoke any key of the organization at once; needs the admin role and scope, as creating one does."""
    auth_service.revoke_api_key(g.user, g.org_id, key_id, any_user=True, ip_address=request.remote_addr or "")

    db.session.commit()
    return "", 204
