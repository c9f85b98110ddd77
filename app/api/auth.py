"""Authentication of API requests by `Authorization: Bearer KEY`."""

import functools

from flask import current_app, g, request
from flask_login import current_user

from app.api.errors import ApiError
from app.auth import service as auth_service
from app.auth.scopes import scope_for_request
from app.billing.limits import count_api_call
from app.ratelimit import enforce

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _bearer_key():
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_scope(api_key, scope):
    """Raise a 403 `insufficient_scope` ApiError unless `api_key` carries `scope`."""
    if not api_key.has_scope(scope):
        raise ApiError(
            403,
            "insufficient_scope",
            f"This request needs an API key with the {scope} scope; this key has {api_key.scopes}. "
            "Create a key with that scope in Settings.",
            {"required_scope": scope, "key_scopes": api_key.scope_list},
        )


def _reject_without_required_two_factor():
    from app.auth.two_factor import api_two_factor_error_message

    message = api_two_factor_error_message(g.user, g.org_id)
    if message is not None:
        raise ApiError(403, "two_factor_required", message)


def api_auth_required(view):
    """Require an API key; reads may also come from a signed-in browser session.

    Writes never accept the cookie: the API is exempt from CSRF, so a cookie-authenticated write
    could be forged by another site. Requests are rate-limited per key, and per client address
    when they come with the cookie, a wrong key or none. A key needs the read scope for GET, HEAD
    and OPTIONS and the write scope for other methods; `role_required` adds the admin scope on
    admin routes.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        raw_key = _bearer_key()
        if raw_key is not None:
            api_key, reason = auth_service.check_api_key(raw_key)
            _limit_rate(f"key:{api_key.id}" if api_key is not None else f"address:{request.remote_addr}")
            if reason == "expired":
                raise ApiError(401, "api_key_expired", "The API key has expired. Create a new key in Settings.")
            if api_key is None:
                raise ApiError(
                    401, "invalid_api_key", "The API key is invalid or revoked. Create a new key in Settings."
                )
            require_scope(api_key, scope_for_request(request.method))
            g.api_key = api_key
            g.user = api_key.user
            g.org_id = api_key.org_id
            _reject_without_required_two_factor()
            # Counts the call against the plan's monthly API calls; raises LimitExceeded (402) past it.
            count_api_call(g.org_id)
        elif request.method in SAFE_METHODS and current_user.is_authenticated:
            from app.orgs.service import current_org

            _limit_rate(f"address:{request.remote_addr}")

            g.api_key = None
            g.user = current_user
            g.org_id = current_org().id
            _reject_without_required_two_factor()
        else:
            _limit_rate(f"address:{request.remote_addr}")
            raise ApiError(
                401,
                "missing_api_key",
                "This route needs an API key. Send it as 'Authorization: Bearer KEY'; create one in Settings.",
            )
        g.log_user_id = g.user.id
        g.log_org_id = g.org_id
        return view(*args, **kwargs)

    return wrapper


def _limit_rate(bucket):
    """Count the request against API_RATE_LIMIT per API_RATE_WINDOW_SECONDS; 0 turns the limit off."""
    limit = current_app.config["API_RATE_LIMIT"]
    if limit <= 0:
        return
    window = current_app.config["API_RATE_WINDOW_SECONDS"]
    enforce(f"api:{bucket}", limit, window, f"Too many API requests: the limit is {limit} per {window} seconds.")
