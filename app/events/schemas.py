"""The event schema: the pydantic models that validate API requests and describe responses.

The same models feed the OpenAPI document, so what it shows is what the API enforces.
"""

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from flask import current_app
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from app.events.models import EVENT_TYPES, SOURCES

TIMESTAMP_FORM = "an ISO 8601 timestamp with an offset, such as 2025-02-13T09:16:25Z or 2025-02-13T10:16:25+01:00"
EVENT_FIELDS = ("type", "path", "tool", "occurred_at", "session", "event_id", "metadata", "source")
# Sources a client may claim; "git" and "web" are set only by the server's own importers.
CLIENT_SOURCES = ("api", "agent")

# Compact and without \\u escapes for non-ASCII text, as the size limit counts UTF-8 bytes.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def json_type_name(value):
    """Name a parsed JSON value's type with its article, for messages: "a number", "an array", "null"."""
    if value is None:
        return "null"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def parse_timestamp(value, assume_utc=False):
    """Parse an ISO 8601 string into an aware UTC datetime; raise ValueError with a message for people.

    A timestamp without an offset is rejected unless `assume_utc` is set (the events page, whose
    date inputs carry no zone and whose times are shown in UTC).
    """
    if not isinstance(value, str):
        raise ValueError(f"must be {TIMESTAMP_FORM}, not {json_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        reason = "" if str(error).startswith("Invalid isoformat") else f" ({error})"
        raise ValueError(f"is not a valid date and time: {value!r}{reason}; expected {TIMESTAMP_FORM}") from None
    if parsed.tzinfo is None:
        if not assume_utc:
            raise ValueError(f"has no UTC offset: {value!r}; add one, such as {value}Z for UTC or {value}+01:00")
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"is outside the supported years 1 to 9999: {value!r}") from None


def _timestamp_before(value):
    try:
        return parse_timestamp(value)
    except ValueError as error:
        raise PydanticCustomError("timestamp", "{reason}", {"reason": str(error)}) from None


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp_before),
    WithJsonSchema({"type": "string", "format": "date-time", "description": TIMESTAMP_FORM}),
]


# NUL characters cannot be stored in PostgreSQL text. A pattern is checked by pydantic-core
# without a call into Python, which matters at thousands of events a second.
NO_NUL_PATTERN = r"^[^\x00]*$"


def text(min_length=0, max_length=None):
    """Build a string type with length limits that rejects NUL characters."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL_PATTERN)]


def _metadata_limits(info):
    context = info.context or {}
    if "max_depth" in context:
        return context["max_depth"], context["max_bytes"]
    return current_app.config["EVENT_METADATA_MAX_DEPTH"], current_app.config["EVENT_METADATA_MAX_BYTES"]


def _nests_deeper(value, levels):
    """Return whether `value` nests more than `levels` levels of objects and arrays (`{}` is one level).

    The walk stops at the limit, so hostile nesting costs no more than the limit.
    """
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if levels == 0:
        return True
    for child in children:
        if isinstance(child, (dict, list)) and _nests_deeper(child, levels - 1):
            return True
    return False


def _find_nul(value, path):
    """Return the path of the first key or string in `value` that contains a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"a key of {path}"
            found = _find_nul(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for position, item in enumerate(value):
            found = _find_nul(item, f"{path}[{position}]")
            if found:
                return found
    return None


class MeasuredMetadata(dict):
    """Metadata with the compact JSON that its size was measured on, so storing it need not serialize it again."""

    __slots__ = ("json",)


class EventIn(BaseModel):
    """One usage event as a client sends it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal[EVENT_TYPES]
    path: text(1, 1024)
    tool: text(0, 100) = ""
    occurred_at: Timestamp
    session: text(0, 200) | None = Field(None, description="Groups the events of one unit of work, such as one commit.")
    event_id: text(1, 200) | None = Field(
        None, description="The client's id for the event; a resend with the same id stores nothing new."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="A small JSON object; its depth and serialized size are limited by the server's settings.",
    )
    source: Literal[CLIENT_SOURCES] | None = Field(
        None, description="'agent' for the watcher agent; defaults to the batch's source, then 'api'."
    )

    @field_validator("metadata")
    @classmethod
    def check_metadata(cls, value, info: ValidationInfo):
        if not value:
            return value
        max_depth, max_bytes = _metadata_limits(info)
        # Depth first: it bounds the recursion of the JSON encoder below.
        if _nests_deeper(value, max_depth):
            raise PydanticCustomError(
                "metadata_too_deep",
                "is nested deeper than the limit of {limit} levels (the metadata object itself is level 1)",
                {"limit": max_depth},
            )
        text = _COMPACT_JSON.encode(value)
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            raise PydanticCustomError(
                "invalid_unicode", "contains a lone surrogate (\\ud800 to \\udfff); send valid UTF-8 text"
            ) from None
        if size > max_bytes:
            raise PydanticCustomError(
                "metadata_too_large",
                "is {size} bytes as compact JSON; the limit is {limit} bytes",
                {"size": size, "limit": max_bytes},
            )
        # The encoder writes NUL as \u0000, so the slow walk runs only when that text appears.
        if "\\u0000" in text:
            location = _find_nul(value, "metadata")
            if location:
                raise PydanticCustomError(
                    "nul_character", "contains a NUL character (\\u0000) in {location}", {"location": location}
                )
        measured = MeasuredMetadata(value)
        measured.json = text
        return measured

    def values(self, default_source):
        """Return the validated event as the dict that `service.insert_events` takes."""
        return {
            "type": self.type,
            "path": self.path,
            "tool": self.tool,
            "occurred_at": self.occurred_at,
            "session": self.session,
            "event_id": self.event_id,
            "metadata": self.metadata,
            "metadata_json": getattr(self.metadata, "json", None),
            "source": self.source or default_source,
        }


class EventBatchIn(BaseModel):
    """A batch of events. Each item is validated on its own, so valid items are stored beside rejected ones."""

    model_config = ConfigDict(strict=True, extra="forbid")

    events: list[EventIn] = Field(
        min_length=1,
        description="1 to EVENTS_BATCH_MAX_EVENTS events (1,000 by default), at most EVENTS_BATCH_MAX_BYTES.",
    )
    source: Literal[CLIENT_SOURCES] | None = Field(None, description="The source of items that name none.")


class EventOut(BaseModel):
    """A stored event."""

    id: int
    type: Literal[EVENT_TYPES]
    path: str
    tool: str
    occurred_at: str = Field(description="ISO 8601 in UTC, with a Z.")
    session: str | None
    event_id: str | None
    metadata: dict[str, Any]
    source: Literal[SOURCES]
    received_at: str = Field(description="When the server stored the event; ISO 8601 in UTC, with a Z.")
    user_id: int | None


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class FieldError(BaseModel):
    field: str
    message: str


class BatchItemResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    id: int | None = Field(None, description="The stored event: the new one, or the earlier one a duplicate repeats.")
    errors: list[FieldError] | None = Field(None, description="Why a rejected item was rejected.")


class BatchResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItemResult]


# Errors raised by the validators above, whose messages continue the field's name.
_OWN_ERROR_TYPES = {"timestamp", "nul_character", "invalid_unicode", "metadata_too_deep", "metadata_too_large"}
_REQUIRED_HINTS = {
    "type": "one of " + ", ".join(EVENT_TYPES),
    "path": "the file or command path, 1 to 1024 characters",
    "occurred_at": TIMESTAMP_FORM,
}


def describe_errors(error: PydanticValidationError):
    """Turn a pydantic error into [{"field", "message"}] entries whose messages name the fix."""
    details = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "event"
        kind = item["type"]
        if not item["loc"]:
            message = f"an event must be a JSON object, not {json_type_name(item['input'])}"
        elif kind == "missing":
            hint = _REQUIRED_HINTS.get(field)
            message = f"{field} is required" + (f": {hint}" if hint else "")
        elif kind == "extra_forbidden":
            message = f"{field} is not a field of an event; the fields are {', '.join(EVENT_FIELDS)}"
        elif kind == "literal_error" and field == "type":
            message = f"type must be one of {', '.join(EVENT_TYPES)}; got {item['input']!r}"
        elif kind == "literal_error":
            message = f"{field}: {item['msg']}; got {item['input']!r}"
        elif kind == "string_pattern_mismatch" and item["ctx"]["pattern"] == NO_NUL_PATTERN:
            message = f"{field} must not contain a NUL character (\\u0000)"
        elif kind == "string_unicode":
            message = f"{field} contains a lone surrogate (\\ud800 to \\udfff); send valid UTF-8 text"
        elif kind == "string_type":
            message = f"{field} must be a string, not {json_type_name(item['input'])}"
        elif kind == "dict_type":
            message = f"{field} must be a JSON object, not {json_type_name(item['input'])}"
        elif kind in _OWN_ERROR_TYPES:
            message = f"{field} {item['msg']}"
        else:
            message = f"{field}: {item['msg']}"
        details.append({"field": field, "message": message})
    return details


def summarize(details):
    """Join the first messages of `details` into one line for the error envelope's message."""
    return "; ".join(entry["message"] for entry in details[:3]) + ("; ..." if len(details) > 3 else "")
