"""Who the API key belongs to."""

from flask import g, jsonify
from pydantic import BaseModel

from app.api import bp
from app.api.auth import api_auth_required
from app.api.openapi import operation


class MeResponse(BaseModel):
    user_id: int
    email: str
    name: str
    org_id: int
    api_key_prefix: str | None


@bp.get("/me")
@operation("The user and organization the request acts for", response_model=MeResponse, tag="account")
@api_auth_required
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
