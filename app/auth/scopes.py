"""API key scopes and how they relate to organization roles.

A key carries a subset of `read`, `write` and `admin`. A request through a key needs `read` for
GET, HEAD and OPTIONS, `write` for other methods, and `admin` on routes that need the admin or
owner role. The key's user must also hold the route's role at the time of the request, so a key
never does more than its user currently may.
"""

from app.errors import ValidationError

SCOPES = ("read", "write", "admin")
DEFAULT_SCOPES = ("read", "write")
# The scopes a role may put on its own keys.
ROLE_SCOPES = {
    "viewer": ("read",),
    "member": ("read", "write"),
    "admin": SCOPES,
    "owner": SCOPES,
}
# Offered on the settings page; the API accepts any whole number of days in 1..MAX_EXPIRY_DAYS.
EXPIRY_DAY_CHOICES = (30, 90, 365)
MAX_EXPIRY_DAYS = 365


def parse_scopes(value):
    """Return the scopes in `value` (a comma-separated string or a list) in canonical order.

    Raises ValidationError for an empty selection or an unknown scope.
    """
    if isinstance(value, str):
        value = value.split(",")
    requested = {str(scope).strip().lower() for scope in value or () if str(scope).strip()}
    unknown = sorted(requested - set(SCOPES))
    if unknown:
        raise ValidationError(
            f"Unknown API key scope {', '.join(unknown)}; use a subset of {', '.join(SCOPES)}.",
            {"scopes": "unknown scope"},
        )
    if not requested:
        raise ValidationError(f"Choose at least one scope for the key: {', '.join(SCOPES)}.", {"scopes": "missing"})
    return [scope for scope in SCOPES if scope in requested]


def check_scopes_for_role(scopes, role):
    """Raise ValidationError unless every scope in `scopes` is allowed to `role`."""
    allowed = ROLE_SCOPES.get(role, ())
    extra = [scope for scope in scopes if scope not in allowed]
    if extra:
        raise ValidationError(
            f"Your role {role or 'none'} allows keys with the scopes {', '.join(allowed) or 'none'}; "
            f"remove {', '.join(extra)}.",
            {"scopes": "exceeds role"},
        )


def scope_for_request(method, required_role=None):
    """Return the scope a key needs for a request with `method` to a route gated by `required_role`."""
    if required_role in ("admin", "owner"):
        return "admin"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    return "write"
