"""Cursor pagination: an opaque cursor holds the sort values of the last row returned."""

import base64
import json

from flask import request

from app.api.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def parse_limit(default=DEFAULT_LIMIT, maximum=MAX_LIMIT):
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {maximum}, got {raw!r}.")
    return limit


def encode_cursor(values):
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor, length):
    """Decode a cursor into its list of `length` values, or raise a 400 the client can act on."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        values = None
    if not isinstance(values, list) or len(values) != length:
        raise ApiError(
            400, "invalid_cursor", "The cursor is invalid. Use the next_cursor of a previous page, unchanged."
        )
    return values


def page_response(items, limit, cursor_of):
    """Build {"data", "next_cursor"} from up to limit + 1 fetched rows."""
    has_more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(cursor_of(items[-1])) if has_more and items else None
    return items, next_cursor
