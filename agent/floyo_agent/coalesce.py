"""Merging the burst of file system events that one save makes into one change per path.

Editors save in many ways: write in place (often many modified events), truncate then write, write
a temporary file and rename it onto the real one, or rename the original to a backup name and write
a new file. Each path's events are held until no new event arrived for it during the settle window,
and then leave as one change.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from floyo_agent.events import local_now

CREATED = "created"
MODIFIED = "modified"
DELETED = "deleted"
MOVED = "moved"

# The merged kind of a path's pending change (first) and another event for it within the settle
# window (second). None drops the path: a file created and deleted again within the window never mattered.
# A pair that is missing here (any pair with a move) sends the pending change as it is and starts
# a new one.
_MERGED = {
    (CREATED, CREATED): CREATED,
    (CREATED, MODIFIED): CREATED,
    (CREATED, DELETED): None,
    (MODIFIED, CREATED): MODIFIED,
    (MODIFIED, MODIFIED): MODIFIED,
    (MODIFIED, DELETED): DELETED,
    # Deleted and written again: an editor that saves by replacing the file.
    (DELETED, CREATED): MODIFIED,
    (DELETED, MODIFIED): MODIFIED,
    (DELETED, DELETED): DELETED,
}


@dataclass
class Change:
    """One path's merged change, ready to become an event."""

    kind: str
    path: str
    # When the first event merged into this change happened, with the local UTC offset.
    occurred_at: datetime
    # Monotonic clock readings of the first and the latest event merged into this change.
    first_seen: float
    last_seen: float
    # For a move: the path the file came from.
    source: str | None = None

    @property
    def event_type(self):
        return f"file_{self.kind}"


class Coalescer:
    """Holds file system events per path and releases them merged once they have settled.

    Watchdog's observer thread adds events while the agent's main loop collects settled changes,
    so every method takes the lock.
    """

    def __init__(self, settle_seconds=1.0, max_hold_seconds=None, clock=time.monotonic, wall_clock=local_now):
        self.settle_seconds = settle_seconds
        # A file written to without pause (a log, a download) never settles. After this long its
        # change is sent anyway, and the next write starts a new one.
        self.max_hold_seconds = max_hold_seconds if max_hold_seconds is not None else max(30.0, 10 * settle_seconds)
        self._clock = clock
        self._wall_clock = wall_clock
        self._pending = {}
        # Changes that must leave as they are, such as a modification made before the file was moved.
        self._released = []
        self._lock = threading.Lock()

    def add(self, kind, path):
        """Record a created, modified or deleted event for the path."""
        with self._lock:
            self._merge(kind, path, self._clock(), self._wall_clock())

    def add_move(self, source, destination):
        """Record a file moved from source to destination, both inside the watched folders."""
        with self._lock:
            now = self._clock()
            occurred_at = self._wall_clock()
            before = self._pending.pop(source, None)

            if before is not None and before.kind == CREATED:
                # A file that lived less than the settle window before being renamed is a temporary
                # file, as in the atomic saves of sed -i, gedit and many libraries: the destination
                # was modified.
                # NOTE: a new file written this way is reported as modified too, because the rename
                # event does not show whether the destination existed before.
                self._merge(MODIFIED, destination, now, before.occurred_at)
                return

            origin = source
            if before is not None and before.kind == MOVED:
                # Moved from A to B, then on to C: one move from A to C, or none if it came back to A.
                origin = before.source
                occurred_at = before.occurred_at
                if origin == destination:
                    return
            elif before is not None:
                self._released.append(before)

            replaced = self._pending.pop(destination, None)
            if replaced is not None:
                self._released.append(replaced)
            self._pending[destination] = Change(MOVED, destination, occurred_at, now, now, source=origin)

    def pop_settled(self, force=False):
        """Remove and return the changes that have settled, oldest first; all of them with force."""
        with self._lock:
            now = self._clock()
            ready = self._released
            self._released = []
            for path, change in list(self._pending.items()):
                quiet = now - change.last_seen >= self.settle_seconds
                held_too_long = now - change.first_seen >= self.max_hold_seconds
                if force or quiet or held_too_long:
                    ready.append(self._pending.pop(path))
            ready.sort(key=lambda change: change.first_seen)
            return ready

    def __len__(self):
        with self._lock:
            return len(self._pending) + len(self._released)

    def _merge(self, kind, path, now, occurred_at):
        pending = self._pending.get(path)
        if pending is None:
            self._pending[path] = Change(kind, path, occurred_at, now, now)
            return

        pair = (pending.kind, kind)
        if pair not in _MERGED:
            self._released.append(self._pending.pop(path))
            self._pending[path] = Change(kind, path, occurred_at, now, now)
            return

        merged = _MERGED[pair]
        if merged is None:
            del self._pending[path]
            return
        pending.kind = merged
        pending.last_seen = now
