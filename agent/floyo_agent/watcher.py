"""Watching folders with watchdog and turning what happens in them into queued events."""

import logging
import os
import signal
import threading

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from floyo_agent.coalesce import CREATED, DELETED, MODIFIED, Coalescer
from floyo_agent.events import DEFAULT_TOOL, new_event
from floyo_agent.noise import NoiseFilter
from floyo_agent.sender import SendLoop

logger = logging.getLogger(__name__)


class WatchError(Exception):
    """The folders cannot be watched."""


class ChangeHandler(FileSystemEventHandler):
    """Passes watchdog's file events that are not noise to the coalescer.

    Folder events are left out: creating, moving or deleting a folder also produces an event for
    each file in it. Opened, closed and attribute events are left out too, because every reader
    (indexers, backup programs, the agent itself) would produce them.
    """

    def __init__(self, noise, coalescer):
        super().__init__()
        self.noise = noise
        self.coalescer = coalescer

    def on_any_event(self, event):
        if event.is_directory:
            return
        source = os.fsdecode(event.src_path)
        destination = os.fsdecode(event.dest_path or "")
        if event.event_type == "moved":
            self._on_moved(source, destination)
        elif event.event_type in (CREATED, MODIFIED, DELETED):
            if not self.noise.is_ignored(source):
                self.coalescer.add(event.event_type, source)

    def _on_moved(self, source, destination):
        # Watchdog gives a move with one side empty when the other side is outside the watched folders.
        if not destination:
            if not self.noise.is_ignored(source):
                self.coalescer.add(DELETED, source)
            return
        if not source:
            if not self.noise.is_ignored(destination):
                self.coalescer.add(CREATED, destination)
            return

        source_ignored = self.noise.is_ignored(source)
        destination_ignored = self.noise.is_ignored(destination)
        if source_ignored and destination_ignored:
            return
        if source_ignored:
            # A temporary file renamed onto the real one: an editor's atomic save.
            # NOTE: a brand-new file saved this way is reported as modified too, because the rename
            # event does not show whether the destination existed before.
            self.coalescer.add(MODIFIED, destination)
        elif destination_ignored:
            # Renamed to a backup or temporary name, as editors do before writing a new copy.
            self.coalescer.add(DELETED, source)
        else:
            self.coalescer.add_move(source, destination)


def distinct_folders(folders):
    """Return the folders as real absolute paths, leaving out any folder inside another one.

    A folder inside another is already watched through it, and watching it twice would send each
    of its events twice.
    """
    resolved = sorted({os.path.realpath(os.path.expanduser(folder)) for folder in folders}, key=len)
    kept = []
    for folder in resolved:
        if any(folder == outer or folder.startswith(outer.rstrip(os.sep) + os.sep) for outer in kept):
            logger.info("Not watching %s separately: it is inside another watched folder", folder)
            continue
        kept.append(folder)
    return kept


def change_to_event(change, tool):
    metadata = {"from": change.source} if change.source else {}
    return new_event(change.event_type, change.path, tool=tool, occurred_at=change.occurred_at, metadata=metadata)


class WatchAgent:
    """Watches folders, queues their settled changes as events on disk and sends them in the background."""

    def __init__(
        self,
        folders,
        queue,
        sender,
        *,
        ignore_patterns,
        settle_seconds=1.0,
        max_backoff=300.0,
        tool=DEFAULT_TOOL,
    ):
        self.folders = distinct_folders(folders)
        self.queue = queue
        self.tool = tool
        self.coalescer = Coalescer(settle_seconds)
        self.noise = NoiseFilter(self.folders, ignore_patterns)
        self.send_loop = SendLoop(sender, max_backoff=max_backoff)
        # How often settled changes are collected: a quarter of the settle window, within 50-500 ms.
        self.tick_seconds = max(0.05, min(0.5, settle_seconds / 4))

    def run(self, stop):
        """Watch until `stop` is set. Changes still settling when it stops are queued, not lost."""
        observer = Observer()
        handler = ChangeHandler(self.noise, self.coalescer)
        for folder in self.folders:
            observer.schedule(handler, folder, recursive=True)
        try:
            observer.start()
        except OSError as error:
            # On Linux the usual cause is the limit of inotify watches, one per watched folder.
            raise WatchError(
                f"Cannot watch {', '.join(self.folders)}: {error}. On Linux, raise the limit with "
                "'sysctl fs.inotify.max_user_watches=524288' or watch fewer folders."
            ) from error

        for folder in self.folders:
            logger.info("Watching %s", folder)
        self.send_loop.start()
        try:
            while not stop.wait(self.tick_seconds):
                self._queue_changes(self.coalescer.pop_settled())
        finally:
            observer.stop()
            observer.join()
            self._queue_changes(self.coalescer.pop_settled(force=True))
            self.send_loop.stop()
            self.send_loop.join(timeout=15)
            logger.info("Stopped watching; queued events in %s: %d", self.queue.path, self.queue.count())

    def _queue_changes(self, changes):
        events = []
        for change in changes:
            if not _is_utf8(change.path) or not _is_utf8(change.source or ""):
                logger.warning("Skipped %s of a path that is not valid UTF-8: %r", change.event_type, change.path)
                continue
            events.append(change_to_event(change, self.tool))
        if not events:
            return
        self.queue.add(events)
        for event in events:
            logger.debug("Queued %s %s (%s)", event["type"], event["path"], event["event_id"])
        self.send_loop.wake()


def _is_utf8(path):
    # File names that are not valid UTF-8 reach Python as lone surrogates, which JSON cannot carry.
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stop_on_signals(stop):
    """Set `stop` on SIGINT and SIGTERM; a second signal exits at once. Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info("Stopping on %s; press Ctrl-C again to quit at once", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
