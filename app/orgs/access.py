"""Roles within an organization and the decorator that enforces them on pages and API routes.

Roles rank viewer < member < admin < owner: viewers read, members use and build (events,
workflows, files, suggestions), admins also manage members, API keys, integrations and webhooks,
and owners also billing, deletion of the organization and ownership transfer.
"""

import functools

from flask import g, request

from app.auth.scopes import scope_for_request
from app.errors import Forbidden
from app.extensions import db
from app.orgs.models import ROLES, Membership

ROLE_RANK = {role: rank for rank, role in enumerate(reversed(ROLES))}


def role_allows(role, required):
    """Return whether `role` includes everything `required` may do."""
    return role in ROLE_RANK and ROLE_RANK[role] >= ROLE_RANK[required]


def current_membership():
    """Return the Membership the request acts through, or None.

    A page uses the organization chosen in the session (`current_org`); an API request the
    organization of its key, or of the session for a read with the cookie (`g.org_id`).
    """
    if "membership" in g:
        return g.membership
    if request.path.startswith("/api/") and "org_id" in g:
        g.membership = db.session.scalar(
            db.select(Membership).where(Membership.org_id == g.org_id, Membership.user_id == g.user.id)
        )
        return g.membership
    from app.orgs.service import current_org

    current_org()
    return g.get("membership")


def role_required(required):
    """Reject the request with 403 unless the user's role in the organization includes `required`.

    Put it below `login_required` or `api_auth_required`, which establish who is asking. A request
    through an API key on an admin or owner route also needs the key's admin scope (403
    `insufficient_scope`); `api_auth_required` has already checked read or write.
    """
    if required not in ROLE_RANK:
        raise ValueError(f"unknown role {required!r}; expected one of {', '.join(ROLES)}")

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            membership = current_membership()
            role = membership.role if membership is not None else None
            if not role_allows(role, required):
                raise Forbidden(
                    f"This action needs the {required} role or higher in this organization; "
                    f"your role is {role or 'none'}. Ask an owner or admin to change it."
                )
            api_key = g.get("api_key") if request.path.startswith("/api/") else None
            if api_key is not None:
                from app.api.auth import require_scope

                require_scope(api_key, scope_for_request(request.method, required))
            return view(*args, **kwargs)

        wrapper.floyo_required_role = required
        return wrapper

    return decorator
