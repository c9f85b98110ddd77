"""Usage events in the shape the Floyo server's batch endpoint accepts."""

import uuid
from datetime import datetime

EVENT_TYPES = (
    "file_opened",
    "file_created",
    "file_modified",
    "file_deleted",
    "file_moved",
    "command_executed",
    "tool_used",
)
DEFAULT_TOOL = "floyo-agent"


def local_now():
    """Return the current time with the local UTC offset."""
    return datetime.now().astimezone()


def new_event(event_type, path, *, tool=DEFAULT_TOOL, occurred_at=None, metadata=None):
    """Build an event with a fresh event_id.

    The event_id stays with the event through every resend, so the server stores it once however
    often it arrives. The session is left out: the server splits sessions by the gaps between events.
    """
    return {
        "type": event_type,
        "path": path,
        "tool": tool,
        "occurred_at": (occurred_at or local_now()).isoformat(timespec="milliseconds"),
        "event_id": str(uuid.uuid4()),
        "metadata": metadata or {},
    }
