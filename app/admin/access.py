"""Access to the admin console and the admin API: site admins only, and 404 for everyone else.

A 404 rather than a 403 keeps the console's routes from being discovered by probing.
"""

import functools

from flask import abort, g, request
from flask_login import current_user

from app.api.auth import SAFE_METHODS, _bearer_key
from app.api.errors import ApiError
from app.auth.service import authenticate_api_key


def admin_required(view):
    """Let a signed-in site admin through; answer 404 to anyone else, signed in or not."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not (current_user.is_authenticated and current_user.is_admin):
            abort(404)
        g.log_user_id = current_user.id
        return view(*args, **kwargs)

    return wrapper


def admin_api_required(view):
    """Let an API key of a site admin through; reads may also come from an admin's browser session.

    Writes never accept the cookie, as in `api_auth_required`: the API is exempt from CSRF.
    A missing, invalid or non-admin key gets the same 404 as an unknown route.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        raw_key = _bearer_key()
        user, api_key = None, None
        if raw_key is not None:
            api_key = authenticate_api_key(raw_key)
            user = api_key.user if api_key is not None else None
        elif request.method in SAFE_METHODS and current_user.is_authenticated:
            user = current_user
        if user is None or not user.is_admin:
            raise ApiError(404, "not_found", "The requested URL was not found on the server.")
        g.user = user
        g.api_key = api_key
        g.org_id = api_key.org_id if api_key is not None else None
        g.log_user_id = user.id
        return view(*args, **kwargs)

    return wrapper
