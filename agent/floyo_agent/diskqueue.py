"""The queue of events waiting to be sent, kept in an SQLite file so it survives outages and restarts."""

import json
import os
import sqlite3
import threading
from dataclasses import dataclass

from floyo_agent.events import local_now

QUEUE_FILENAME = "queue.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queued_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    -- The event as JSON, sent byte for byte the same on every attempt.
    body TEXT NOT NULL,
    queued_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# The names kept in agent_state, shown by `floyo-agent status`.
STATE_NAMES = ("last_success_at", "last_error", "last_error_at")


class QueueError(Exception):
    """The queue file cannot be opened or created."""


@dataclass
class QueuedEvent:
    id: int
    event_id: str
    body: str

    @property
    def event(self):
        return json.loads(self.body)


class DiskQueue:
    """Events waiting to be sent, oldest first, and the outcome of the latest attempts.

    Several processes may use one state folder at once, such as a running `watch` and a `record`
    typed in a shell. SQLite's locking keeps the file consistent, and an event that both send is
    stored once by the server because it carries the same event_id.
    """

    def __init__(self, state_dir):
        self.state_dir = os.path.abspath(os.path.expanduser(str(state_dir)))
        self.path = os.path.join(self.state_dir, QUEUE_FILENAME)
        self._lock = threading.Lock()
        try:
            # The queue contains the paths a user works on, so only the user may read it.
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            with self._connection:
                self._connection.execute("PRAGMA journal_mode=WAL")
                self._connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise QueueError(
                f"Cannot open the event queue {self.path}: {error}. Check that the state folder is writable, "
                "or choose another with --state-dir."
            ) from error

    def close(self):
        with self._lock:
            self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def add(self, events):
        """Append events; an event whose event_id is already queued is skipped."""
        queued_at = local_now().isoformat(timespec="seconds")
        rows = [(event["event_id"], json.dumps(event, separators=(",", ":")), queued_at) for event in events]
        with self._lock, self._connection:
            self._connection.executemany(
                "INSERT OR IGNORE INTO queued_events (event_id, body, queued_at) VALUES (?, ?, ?)", rows
            )

    def peek(self, limit):
        """Return up to `limit` queued events, oldest first, leaving them in the queue."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT id, event_id, body FROM queued_events ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [QueuedEvent(*row) for row in rows]

    def remove(self, ids):
        with self._lock, self._connection:
            self._connection.executemany("DELETE FROM queued_events WHERE id = ?", [(id_,) for id_ in ids])

    def count(self):
        with self._lock:
            return self._connection.execute("SELECT count(*) FROM queued_events").fetchone()[0]

    def oldest_queued_at(self):
        """Return when the oldest queued event was queued (ISO 8601), or None when the queue is empty."""
        with self._lock:
            row = self._connection.execute("SELECT queued_at FROM queued_events ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def set_state(self, **values):
        unknown = set(values) - set(STATE_NAMES)
        if unknown:
            raise ValueError(f"unknown agent state names: {', '.join(sorted(unknown))}")
        with self._lock, self._connection:
            self._connection.executemany(
                "INSERT INTO agent_state (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def state(self):
        """Return the stored state as a dict with every name in STATE_NAMES, None where never set."""
        with self._lock:
            rows = self._connection.execute("SELECT name, value FROM agent_state").fetchall()
        stored = dict(rows)
        return {name: stored.get(name) for name in STATE_NAMES}
