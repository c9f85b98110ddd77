"""The watcher agent: noise, merging of saves, the disk queue, sending with retries, and its commands.

Every server here runs on 127.0.0.1 and is started by the test: a small stand-in for the batch
endpoint for the sender's edge cases, and the real Floyo app for the end-to-end tests.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import sqlalchemy as sa
from watchdog.events import FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent
from werkzeug.serving import make_server

from app.events.models import Event
from app.extensions import db
from floyo_agent import cli
from floyo_agent.coalesce import CREATED, DELETED, MODIFIED, Coalescer
from floyo_agent.diskqueue import DiskQueue
from floyo_agent.events import new_event
from floyo_agent.noise import DEFAULT_IGNORE_PATTERNS, NoiseFilter
from floyo_agent.sender import Sender, backoff_delay
from floyo_agent.watcher import ChangeHandler, WatchAgent

KEY = "test-agent-key"


def wait_until(condition, timeout=20, description="the condition"):
    """Poll `condition` until it returns something true, or fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {description}")
        time.sleep(0.05)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- A stand-in for the batch endpoint --------------------------------------------------------------


class FakeFloyo:
    """The batch endpoint on 127.0.0.1, storing events by event_id the way Floyo does.

    `scripted` contains responses to return before the normal ones: (status, body, headers, store).
    With `store` the batch is stored as usual first, like a server whose response is lost on the way.
    `reject(event)` returns the errors of an event to reject, or None. A batch containing an event
    whose path ends with "poison" is refused whole with a 400, like a body the server cannot parse.
    """

    def __init__(self, max_events=1000):
        self.stored = {}
        self.batches = []
        self.scripted = []
        self.max_events = max_events
        self.reject = lambda event: None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def answer(self, headers, body):
        if headers.get("Authorization") != f"Bearer {KEY}":
            return 401, {"error": {"code": "invalid_api_key", "message": "The API key is invalid or revoked."}}, {}
        batch = json.loads(body)
        events = batch["events"]
        with self._lock:
            self.batches.append(batch)
            if self.scripted:
                status, answer, extra_headers, store = self.scripted.pop(0)
                if store:
                    self._store(events)
                return status, answer, extra_headers
        if len(events) > self.max_events:
            return 413, {"error": {"code": "batch_too_large", "message": "Too many events."}}, {}
        if any(event["path"].endswith("poison") for event in events):
            return 400, {"error": {"code": "invalid_json", "message": "The request body is not valid JSON."}}, {}
        with self._lock:
            results = self._store(events)
        counts = {status: sum(1 for result in results if result["status"] == status) for status in self._statuses}
        answer = {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        }
        return (200 if counts["accepted"] or counts["duplicate"] else 422), answer, {}

    _statuses = ("accepted", "duplicate", "rejected")

    def _store(self, events):
        results = []
        for index, event in enumerate(events):
            errors = self.reject(event)
            if errors:
                results.append({"index": index, "status": "rejected", "errors": errors})
            elif event["event_id"] in self.stored:
                results.append({"index": index, "status": "duplicate", "id": index})
            else:
                self.stored[event["event_id"]] = event
                results.append({"index": index, "status": "accepted", "id": index})
        return results

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/api/v1/events/batch":
                    status, answer, headers = 404, {"error": {"code": "not_found", "message": "Not found."}}, {}
                else:
                    status, answer, headers = fake.answer(self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def fake_server():
    server = FakeFloyo().start()
    yield server
    server.stop()


@pytest.fixture
def queue(tmp_path):
    with DiskQueue(tmp_path / "state") as disk_queue:
        yield disk_queue


@pytest.fixture(autouse=True)
def agent_environment(monkeypatch):
    """Keep the caller's agent settings out, and the CLI's log handler from outliving its test."""
    monkeypatch.delenv("FLOYO_SERVER", raising=False)
    monkeypatch.delenv("FLOYO_API_KEY", raising=False)
    yield
    agent_logger = logging.getLogger("floyo_agent")
    agent_logger.handlers[:] = []
    agent_logger.propagate = True
    agent_logger.setLevel(logging.NOTSET)


def file_events(count, prefix="/work/project/file"):
    return [new_event("file_modified", f"{prefix}{index}.txt") for index in range(count)]


# --- Noise ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        ".git/index",
        ".hg/store/data",
        ".svn/entries",
        "src/__pycache__/module.cpython-311.pyc",
        "web/node_modules/left-pad/index.js",
        ".venv/lib/site.py",
        "venv/bin/python",
        "env/lib/module.py",
        ".mypy_cache/3.11/cache.json",
        ".pytest_cache/v/cache/lastfailed",
        ".tox/py311/log.txt",
        ".idea/workspace.xml",
        "src/.app.py.swp",
        "notes.txt.swo",
        "notes.txt.swx",
        "notes.txt~",
        ".#notes.txt",
        "#notes.txt#",
        "src/4913",
        "download.tmp",
        "~$report.docx",
        "photos/.DS_Store",
    ],
)
def test_noise_default_patterns_skip(tmp_path, relative):
    noise = NoiseFilter([str(tmp_path)])

    assert noise.is_ignored(str(tmp_path / relative))


@pytest.mark.parametrize(
    "relative",
    ["app.py", "src/env.py", ".env", "environment/setup.py", "docs/4913.txt", "report.docx", "tmp/notes.md"],
)
def test_noise_keeps_ordinary_files(tmp_path, relative):
    noise = NoiseFilter([str(tmp_path)])

    assert not noise.is_ignored(str(tmp_path / relative))


def test_noise_skips_folder_with_pyvenv_cfg(tmp_path):
    (tmp_path / "tools" / "lib").mkdir(parents=True)
    (tmp_path / "tools" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    noise = NoiseFilter([str(tmp_path)])

    assert noise.is_ignored(str(tmp_path / "tools" / "lib" / "site.py"))
    assert noise.is_ignored(str(tmp_path / "tools" / "pyvenv.cfg"))
    assert not noise.is_ignored(str(tmp_path / "toolbox" / "lib" / "site.py"))


def test_noise_only_names_below_watched_folder(tmp_path):
    root = tmp_path / "env" / "project"
    noise = NoiseFilter([str(root)])

    assert not noise.is_ignored(str(root / "main.py"))


def test_noise_custom_patterns(tmp_path):
    noise = NoiseFilter([str(tmp_path)], [*DEFAULT_IGNORE_PATTERNS, "*.log", "build", "out/generated"])

    assert noise.is_ignored(str(tmp_path / "server.log"))
    assert noise.is_ignored(str(tmp_path / "lib" / "build" / "module.o"))
    assert noise.is_ignored(str(tmp_path / "out" / "generated" / "parser.c"))
    assert not noise.is_ignored(str(tmp_path / "src" / "out" / "generated" / "parser.c"))
    assert not noise.is_ignored(str(tmp_path / "out" / "parser.c"))
    assert noise.is_ignored(str(tmp_path / ".git" / "HEAD"))


def test_noise_without_default_patterns(tmp_path):
    noise = NoiseFilter([str(tmp_path)], ["*.log"])

    assert not noise.is_ignored(str(tmp_path / ".git" / "HEAD"))
    assert noise.is_ignored(str(tmp_path / "server.log"))


# --- Merging the events of one save ---------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def coalescer(clock):
    return Coalescer(settle_seconds=1.0, clock=clock)


@pytest.fixture
def handler(tmp_path, coalescer):
    return ChangeHandler(NoiseFilter([str(tmp_path)]), coalescer)


def settled(coalescer, clock):
    clock.advance(5)
    return [(change.event_type, change.path, change.source) for change in coalescer.pop_settled()]


def test_coalescer_create_then_modify(coalescer, clock):
    coalescer.add(CREATED, "/p/a.txt")
    coalescer.add(MODIFIED, "/p/a.txt")
    coalescer.add(MODIFIED, "/p/a.txt")

    assert settled(coalescer, clock) == [("file_created", "/p/a.txt", None)]


def test_coalescer_many_modifications_are_one(coalescer, clock):
    for _ in range(5):
        coalescer.add(MODIFIED, "/p/a.txt")
        clock.advance(0.1)

    assert settled(coalescer, clock) == [("file_modified", "/p/a.txt", None)]


def test_coalescer_create_then_delete(coalescer, clock):
    coalescer.add(CREATED, "/p/a.txt")
    coalescer.add(MODIFIED, "/p/a.txt")
    coalescer.add(DELETED, "/p/a.txt")

    assert settled(coalescer, clock) == []


def test_coalescer_delete_then_create(coalescer, clock):
    coalescer.add(DELETED, "/p/a.txt")
    coalescer.add(CREATED, "/p/a.txt")
    coalescer.add(MODIFIED, "/p/a.txt")

    assert settled(coalescer, clock) == [("file_modified", "/p/a.txt", None)]


def test_coalescer_move_keeps_source(coalescer, clock):
    coalescer.add_move("/p/a.txt", "/p/b.txt")

    assert settled(coalescer, clock) == [("file_moved", "/p/b.txt", "/p/a.txt")]


def test_coalescer_temporary_rename_is_modified(coalescer, clock):
    coalescer.add(CREATED, "/p/sedX1b2c3")
    coalescer.add(MODIFIED, "/p/sedX1b2c3")
    coalescer.add_move("/p/sedX1b2c3", "/p/notes.txt")

    assert settled(coalescer, clock) == [("file_modified", "/p/notes.txt", None)]


def test_coalescer_settled_file_renamed_is_moved(coalescer, clock):
    coalescer.add(CREATED, "/p/draft.txt")
    clock.advance(5)
    coalescer.pop_settled()
    coalescer.add_move("/p/draft.txt", "/p/final.txt")

    assert settled(coalescer, clock) == [("file_moved", "/p/final.txt", "/p/draft.txt")]


def test_coalescer_moves_chain_into_one(coalescer, clock):
    coalescer.add_move("/p/a.txt", "/p/b.txt")
    coalescer.add_move("/p/b.txt", "/p/c.txt")

    assert settled(coalescer, clock) == [("file_moved", "/p/c.txt", "/p/a.txt")]


def test_coalescer_modified_then_moved_keeps_both(coalescer, clock):
    coalescer.add(MODIFIED, "/p/a.txt")
    clock.advance(0.2)
    coalescer.add_move("/p/a.txt", "/p/b.txt")

    assert settled(coalescer, clock) == [
        ("file_modified", "/p/a.txt", None),
        ("file_moved", "/p/b.txt", "/p/a.txt"),
    ]


def test_coalescer_waits_for_settle_window(coalescer, clock):
    coalescer.add(MODIFIED, "/p/a.txt")
    clock.advance(0.9)
    coalescer.add(MODIFIED, "/p/a.txt")
    clock.advance(0.9)

    assert coalescer.pop_settled() == []

    clock.advance(0.2)
    assert [change.path for change in coalescer.pop_settled()] == ["/p/a.txt"]


def test_coalescer_releases_endless_writes(clock):
    coalescer = Coalescer(settle_seconds=1.0, max_hold_seconds=5.0, clock=clock)
    released = []
    # A write every half second for 14.5 seconds, never a pause as long as the settle window.
    for _ in range(29):
        coalescer.add(MODIFIED, "/p/server.log")
        clock.advance(0.5)
        released += coalescer.pop_settled()

    assert len(released) == 2
    assert len(coalescer) == 1
    assert {change.event_type for change in released} == {"file_modified"}


def test_coalescer_force_releases_unsettled(coalescer):
    coalescer.add(CREATED, "/p/a.txt")

    assert [change.path for change in coalescer.pop_settled(force=True)] == ["/p/a.txt"]
    assert len(coalescer) == 0


def test_handler_atomic_save_is_modified(tmp_path, handler, coalescer, clock):
    real = str(tmp_path / "notes.txt")
    temporary = str(tmp_path / "notes.txt.tmp")

    handler.dispatch(FileCreatedEvent(temporary))
    handler.dispatch(FileModifiedEvent(temporary))
    handler.dispatch(FileMovedEvent(temporary, real))

    assert settled(coalescer, clock) == [("file_modified", real, None)]


def test_handler_backup_save_is_modified(tmp_path, handler, coalescer, clock):
    real = str(tmp_path / "notes.txt")
    backup = str(tmp_path / "notes.txt~")

    handler.dispatch(FileMovedEvent(real, backup))
    handler.dispatch(FileCreatedEvent(real))
    handler.dispatch(FileModifiedEvent(real))
    handler.dispatch(FileDeletedEvent(backup))

    assert settled(coalescer, clock) == [("file_modified", real, None)]


def test_handler_skips_noise(tmp_path, handler, coalescer, clock):
    handler.dispatch(FileCreatedEvent(str(tmp_path / ".git" / "index.lock")))
    handler.dispatch(FileMovedEvent(str(tmp_path / ".git" / "index.lock"), str(tmp_path / ".git" / "index")))
    handler.dispatch(FileModifiedEvent(str(tmp_path / "src" / ".main.py.swp")))
    handler.dispatch(FileCreatedEvent(str(tmp_path / "4913")))

    assert settled(coalescer, clock) == []


# --- The disk queue --------------------------------------------------------------------------------


def test_disk_queue_keeps_order_and_skips_known_ids(queue):
    events = file_events(3)

    queue.add(events)
    queue.add(events[:1])

    assert queue.count() == 3
    assert [queued.event_id for queued in queue.peek(10)] == [event["event_id"] for event in events]


def test_disk_queue_survives_reopening(tmp_path):
    events = file_events(2)
    with DiskQueue(tmp_path / "state") as first:
        first.add(events)
        first.set_state(last_error="Cannot reach the server")

    with DiskQueue(tmp_path / "state") as second:
        assert [queued.event for queued in second.peek(10)] == events
        assert second.state()["last_error"] == "Cannot reach the server"


def test_disk_queue_remove(queue):
    queue.add(file_events(3))
    first, second, third = queue.peek(10)

    queue.remove([first.id, third.id])

    assert [queued.id for queued in queue.peek(10)] == [second.id]


# --- Sending -----------------------------------------------------------------------------------------


def test_sender_delivers_and_empties_queue(fake_server, queue):
    events = file_events(3)
    queue.add(events)

    report = Sender(queue, fake_server.url, KEY).flush()

    assert (report.accepted, report.duplicates, report.rejected, report.error) == (3, 0, 0, None)
    assert set(fake_server.stored) == {event["event_id"] for event in events}
    assert fake_server.batches[0]["source"] == "agent"
    assert queue.count() == 0
    assert queue.state()["last_success_at"] is not None


def test_sender_splits_into_batches(fake_server, queue):
    queue.add(file_events(1200))

    report = Sender(queue, fake_server.url, KEY).flush()

    assert report.accepted == 1200
    assert [len(batch["events"]) for batch in fake_server.batches] == [500, 500, 200]
    assert queue.count() == 0


def test_sender_unreachable_server_keeps_queue(queue):
    queue.add(file_events(2))

    report = Sender(queue, f"http://127.0.0.1:{free_port()}", KEY).flush()

    assert report.error.startswith("Cannot reach http://127.0.0.1:")
    assert report.remaining == 2
    assert queue.count() == 2
    assert queue.state()["last_error"] == report.error


@pytest.mark.parametrize("status", [429, 500, 503])
def test_sender_server_error_keeps_queue(fake_server, queue, status):
    queue.add(file_events(2))
    fake_server.scripted.append(
        (status, {"error": {"code": "busy", "message": "Try later."}}, {"Retry-After": "7"}, False)
    )
    sender = Sender(queue, fake_server.url, KEY)

    failed = sender.flush()
    retried = sender.flush()

    assert failed.error.endswith(f"responded {status}: Try later.")
    assert failed.retry_after == 7
    assert failed.remaining == 2
    assert (retried.accepted, retried.remaining) == (2, 0)


def test_sender_resend_stores_once(fake_server, queue):
    events = file_events(2)
    queue.add(events)
    fake_server.scripted.append((502, {"error": {"code": "bad_gateway", "message": "Bad gateway."}}, {}, True))
    sender = Sender(queue, fake_server.url, KEY)

    failed = sender.flush()
    resent = sender.flush()

    assert failed.remaining == 2
    assert (resent.accepted, resent.duplicates) == (0, 2)
    assert [batch["events"] for batch in fake_server.batches] == [events, events]
    assert len(fake_server.stored) == 2
    assert queue.count() == 0


def test_sender_drops_rejected_items(fake_server, queue):
    events = file_events(3)
    queue.add(events)
    fake_server.reject = lambda event: (
        [{"field": "path", "message": "too long"}] if event["path"].endswith("1.txt") else None
    )

    report = Sender(queue, fake_server.url, KEY).flush()

    assert (report.accepted, report.rejected, report.remaining) == (2, 1, 0)
    assert set(fake_server.stored) == {events[0]["event_id"], events[2]["event_id"]}


def test_sender_all_rejected_batch_is_dropped(fake_server, queue):
    queue.add(file_events(2))
    fake_server.reject = lambda event: [{"field": "type", "message": "unknown type"}]

    report = Sender(queue, fake_server.url, KEY).flush()

    assert (report.accepted, report.rejected, report.remaining, report.error) == (0, 2, 0, None)


def test_sender_rejected_key_keeps_queue(fake_server, queue):
    queue.add(file_events(2))

    report = Sender(queue, fake_server.url, "revoked-key").flush()

    assert report.key_rejected
    assert "rejected the API key" in report.error
    assert queue.count() == 2
    assert fake_server.stored == {}


def test_sender_splits_batch_on_413(fake_server, queue):
    fake_server.max_events = 2
    queue.add(file_events(5))

    report = Sender(queue, fake_server.url, KEY).flush()

    assert (report.accepted, report.remaining) == (5, 0)
    assert len(fake_server.stored) == 5


def test_sender_isolates_poison_event(fake_server, queue):
    events = file_events(4)
    events[2]["path"] = "/work/project/poison"
    queue.add(events)

    report = Sender(queue, fake_server.url, KEY).flush()

    assert (report.accepted, report.rejected, report.remaining) == (3, 1, 0)
    assert events[2]["event_id"] not in fake_server.stored


def test_sender_wrong_server_path_keeps_queue(fake_server, queue):
    queue.add(file_events(1))

    report = Sender(queue, fake_server.url + "/floyo", KEY).flush()

    assert "was not found (404)" in report.error
    assert queue.count() == 1


def test_backoff_doubles_up_to_maximum():
    assert 0.9 <= backoff_delay(1, 300) <= 1
    assert 3.6 <= backoff_delay(3, 300) <= 4
    assert 9 <= backoff_delay(12, 10) <= 10
    assert backoff_delay(1, 300, retry_after=30) == 30


# --- Watching ----------------------------------------------------------------------------------------


@pytest.fixture
def run_watch_agent(tmp_path):
    """Start a WatchAgent on a thread: run_watch_agent(folder, server_url, key=KEY, **options) -> agent."""
    started = []

    def start(folder, server_url, key=KEY, **options):
        queue = DiskQueue(tmp_path / f"state-{len(started)}")
        options.setdefault("ignore_patterns", list(DEFAULT_IGNORE_PATTERNS))
        options.setdefault("settle_seconds", 0.3)
        options.setdefault("max_backoff", 0.3)
        agent = WatchAgent([str(folder)], queue, Sender(queue, server_url, key), **options)
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        wait_until(lambda: agent.send_loop.is_alive(), description="the watcher to start")
        started.append((stop, thread, queue))
        return agent

    yield start
    for stop, thread, queue in started:
        stop.set()
        thread.join(timeout=30)
        queue.close()


def stored_paths(fake_server):
    return sorted((event["type"], event["path"]) for event in fake_server.stored.values())


def test_watch_skips_noise_and_merges_saves(tmp_path, fake_server, run_watch_agent):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("first\n")
    run_watch_agent(folder, fake_server.url)

    (folder / ".git").mkdir()
    (folder / ".git" / "index").write_text("index")
    (folder / "node_modules" / "lib").mkdir(parents=True)
    (folder / "node_modules" / "lib" / "index.js").write_text("module.exports = 1")
    (folder / "tools").mkdir()
    (folder / "tools" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (folder / "tools" / "site.py").write_text("import os\n")
    (folder / ".notes.txt.swp").write_text("swap")
    # An editor's atomic save: write a temporary file, then rename it onto the real one.
    (folder / "notes.txt.tmp").write_text("second\n")
    os.replace(folder / "notes.txt.tmp", folder / "notes.txt")
    # A save that writes in several steps.
    with open(folder / "draft.md", "w") as draft:
        for line in range(5):
            draft.write(f"line {line}\n")
            draft.flush()
    (folder / "done.txt").write_text("the last change")
    wait_until(lambda: ("file_created", str(folder / "done.txt")) in stored_paths(fake_server), description="done.txt")

    assert stored_paths(fake_server) == [
        ("file_created", str(folder / "done.txt")),
        ("file_created", str(folder / "draft.md")),
        ("file_modified", str(folder / "notes.txt")),
    ]


def test_watch_applies_extra_ignore_pattern(tmp_path, fake_server, run_watch_agent):
    folder = tmp_path / "project"
    folder.mkdir()
    run_watch_agent(folder, fake_server.url, ignore_patterns=[*DEFAULT_IGNORE_PATTERNS, "*.log"])

    (folder / "server.log").write_text("started\n")
    (folder / "main.py").write_text("print('hi')\n")
    wait_until(lambda: fake_server.stored, description="main.py")

    assert stored_paths(fake_server) == [("file_created", str(folder / "main.py"))]


def test_watch_sends_move_with_source(tmp_path, fake_server, run_watch_agent):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "old.txt").write_text("text")
    run_watch_agent(folder, fake_server.url)

    os.rename(folder / "old.txt", folder / "new.txt")
    wait_until(lambda: fake_server.stored, description="the move")

    [event] = fake_server.stored.values()
    assert (event["type"], event["path"]) == ("file_moved", str(folder / "new.txt"))
    assert event["metadata"] == {"from": str(folder / "old.txt")}
    assert event["tool"] == "floyo-agent"


def test_watch_rejected_key_keeps_queuing(tmp_path, fake_server, run_watch_agent):
    folder = tmp_path / "project"
    folder.mkdir()
    agent = run_watch_agent(folder, fake_server.url, key="revoked-key")

    (folder / "a.txt").write_text("a")
    wait_until(lambda: agent.send_loop.key_rejected, description="the rejected key")
    (folder / "b.txt").write_text("b")
    wait_until(lambda: agent.queue.count() == 2, description="both events queued")

    assert not agent.send_loop.is_alive()
    assert fake_server.stored == {}
    assert "rejected the API key" in agent.queue.state()["last_error"]


# --- The commands ------------------------------------------------------------------------------------


def run_cli(*argv):
    return cli.main([str(argument) for argument in argv])


def test_record_sends_one_event(tmp_path, fake_server, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    status = run_cli(
        "record", "report.pdf", "--type", "file_opened", "--tool", "evince", "--metadata", '{"pages": 3}',
        "--server", fake_server.url, "--key", KEY, "--state-dir", tmp_path / "state",
    )  # fmt: skip

    assert status == 0
    [event] = fake_server.stored.values()
    assert (event["type"], event["path"], event["tool"]) == ("file_opened", str(tmp_path / "report.pdf"), "evince")
    assert event["metadata"] == {"pages": 3}
    assert "1 accepted" in capsys.readouterr().out


def test_record_server_down_queues_event(tmp_path, capsys):
    server = f"http://127.0.0.1:{free_port()}"

    status = run_cli("record", "a.txt", "--server", server, "--key", KEY, "--state-dir", tmp_path / "state")

    assert status == 1
    assert "Queued events not sent yet: 1" in capsys.readouterr().out
    with DiskQueue(tmp_path / "state") as queue:
        assert queue.count() == 1


def test_status_reports_queue_and_last_error(tmp_path, capsys):
    state = tmp_path / "state"
    run_cli("record", "a.txt", "--server", f"http://127.0.0.1:{free_port()}", "--key", KEY, "--state-dir", state)
    capsys.readouterr()

    status = run_cli("status", "--state-dir", state)

    output = capsys.readouterr().out
    assert status == 0
    assert "Queued events: 1" in output
    assert "Oldest queued: " in output
    assert "Last reached the server: never" in output
    assert "Last error: " in output
    assert "Cannot reach http://127.0.0.1:" in output


def test_flush_sends_queued_events(tmp_path, fake_server, capsys):
    state = tmp_path / "state"
    with DiskQueue(state) as queue:
        queue.add(file_events(3))

    status = run_cli("flush", "--server", fake_server.url, "--key", KEY, "--state-dir", state)

    assert status == 0
    assert len(fake_server.stored) == 3
    run_cli("status", "--state-dir", state)
    output = capsys.readouterr().out
    assert "Queued events: 0" in output
    assert "Last reached the server: never" not in output


def test_settings_from_environment_and_config_file(tmp_path, fake_server, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.toml").write_text(f'server = "http://127.0.0.1:{free_port()}"\ntool = "vim"\n')
    monkeypatch.setenv("FLOYO_SERVER", fake_server.url)
    monkeypatch.setenv("FLOYO_API_KEY", KEY)

    status = run_cli("record", tmp_path / "a.txt", "--state-dir", state)

    assert status == 0
    [event] = fake_server.stored.values()
    assert event["tool"] == "vim"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('server = "ftp://example"\nkey = "k"\n', "The server URL 'ftp://example' is invalid"),
        ('colour = "blue"\n', "unknown setting 'colour'"),
        ("settle = true\n", "The setting 'settle'"),
        ("server = \n", "is not valid TOML"),
    ],
)
def test_invalid_config_file_is_reported(tmp_path, capsys, config, message):
    (tmp_path / "agent.toml").write_text(config)

    status = run_cli("record", "a.txt", "--key", KEY, "--config", tmp_path / "agent.toml", "--state-dir", tmp_path)

    assert status == 2
    assert message in capsys.readouterr().err


def test_record_without_key_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLOYO_API_KEY", raising=False)

    status = run_cli("record", "a.txt", "--server", "http://127.0.0.1:1", "--state-dir", tmp_path)

    assert status == 2
    assert "The API key is missing" in capsys.readouterr().err


def test_unusable_state_folder_is_reported(tmp_path, capsys):
    (tmp_path / "state").write_text("a file, not a folder")

    status = run_cli("status", "--state-dir", tmp_path / "state")

    assert status == 1
    assert "Cannot open the event queue" in capsys.readouterr().err


def test_watch_missing_folder_is_reported(tmp_path, capsys):
    status = run_cli(
        "watch", tmp_path / "absent", "--server", "http://127.0.0.1:1", "--key", KEY, "--state-dir", tmp_path
    )

    assert status == 2
    assert "is not a folder" in capsys.readouterr().err


# --- End to end against the real Floyo app ---------------------------------------------------------


class LiveFloyo:
    """The Floyo app served by werkzeug on a thread, on a fixed port so it can stop and come back."""

    def __init__(self, app, port=0):
        self.app = app
        self.port = port
        self._server = None

    def start(self):
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def live_floyo(app):
    servers = []

    def build(port=0):
        server = LiveFloyo(app, port)
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.stop()


@pytest.fixture
def agent_process(tmp_path):
    """Start `floyo-agent watch` as a process: agent_process(folder, server_url, key) -> (process, state dir)."""
    processes = []

    def start(folder, server_url, key):
        state = tmp_path / "agent-state"
        log = tmp_path / "agent.log"
        environment = {name: value for name, value in os.environ.items() if not name.startswith("FLOYO_")}
        command = [
            sys.executable, "-m", "floyo_agent", "watch", str(folder),
            "--server", server_url, "--key", key, "--state-dir", str(state),
            "--settle", "0.3", "--max-backoff", "0.5", "--verbose",
        ]  # fmt: skip
        process = subprocess.Popen(command, stderr=open(log, "w"), stdout=subprocess.DEVNULL, env=environment)
        processes.append(process)
        wait_until(
            lambda: "Watching " in log.read_text() or process.poll() is not None, description="the agent to start"
        )
        assert process.poll() is None, log.read_text()
        return process, state

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def stop_agent(process):
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=30)


def org_events(app, org_id):
    with app.app_context():
        rows = db.session.execute(
            sa.select(Event.type, Event.path, Event.source, Event.tool).where(Event.org_id == org_id).order_by(Event.id)
        ).all()
        return [tuple(row) for row in rows]


def test_agent_delivers_create_and_edit_to_floyo(app, tmp_path, make_user, make_api_key, live_floyo, agent_process):
    user = make_user()
    other = make_user()
    server = live_floyo().start()
    folder = tmp_path / "project"
    folder.mkdir()
    process, _ = agent_process(folder, server.url, make_api_key(user))

    (folder / "report.md").write_text("# Report\n")
    wait_until(lambda: org_events(app, user["org_id"]), description="the created file")
    (folder / "report.md").write_text("# Report\n\nMore.\n")
    wait_until(lambda: len(org_events(app, user["org_id"])) == 2, description="the edit")
    exit_status = stop_agent(process)

    path = str(folder / "report.md")
    assert org_events(app, user["org_id"]) == [
        ("file_created", path, "agent", "floyo-agent"),
        ("file_modified", path, "agent", "floyo-agent"),
    ]
    assert org_events(app, other["org_id"]) == []
    assert exit_status == 0


def test_agent_delivers_after_outage_without_duplicates(
    app, tmp_path, make_user, make_api_key, live_floyo, agent_process
):
    user = make_user()
    key = make_api_key(user)
    port = free_port()
    folder = tmp_path / "project"
    folder.mkdir()
    process, state = agent_process(folder, f"http://127.0.0.1:{port}", key)

    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    with DiskQueue(state) as queue:
        wait_until(lambda: queue.count() == 2, description="two queued events")
        queued = [entry.event for entry in queue.peek(10)]
        wait_until(lambda: queue.state()["last_error"], description="a failed attempt")
    server = live_floyo(port).start()
    wait_until(lambda: len(org_events(app, user["org_id"])) == 2, description="the queued events")
    exit_status = stop_agent(process)

    assert sorted(org_events(app, user["org_id"])) == [
        ("file_created", str(folder / "a.txt"), "agent", "floyo-agent"),
        ("file_created", str(folder / "b.txt"), "agent", "floyo-agent"),
    ]
    assert exit_status == 0
    with DiskQueue(state) as queue:
        assert queue.count() == 0

    # The same batch again, twice, as a resend after a lost answer would send it.
    for _ in range(2):
        answer = requests.post(
            f"{server.url}/api/v1/events/batch",
            json={"source": "agent", "events": queued},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.status_code == 200
        assert (answer.json()["accepted"], answer.json()["duplicates"]) == (0, 2)
    assert len(org_events(app, user["org_id"])) == 2


def test_agent_record_and_status_with_floyo(app, tmp_path, make_user, make_api_key, live_floyo, capsys):
    user = make_user()
    key = make_api_key(user)
    server = live_floyo().start()
    state = tmp_path / "state"

    status = run_cli(
        "record", tmp_path / "build.py", "--type", "command_executed", "--tool", "python",
        "--server", server.url, "--key", key, "--state-dir", state,
    )  # fmt: skip
    run_cli("status", "--state-dir", state)

    output = capsys.readouterr().out
    assert status == 0
    assert org_events(app, user["org_id"]) == [("command_executed", str(tmp_path / "build.py"), "agent", "python")]
    assert "Queued events: 0" in output
    assert "Last error: none" in output


def test_agent_with_revoked_key_keeps_events(app, tmp_path, live_floyo, capsys):
    server = live_floyo().start()
    state = tmp_path / "state"

    status = run_cli("record", "a.txt", "--server", server.url, "--key", "flo_not_a_key", "--state-dir", state)

    assert status == 1
    assert "rejected the API key (401)" in capsys.readouterr().err
    with DiskQueue(state) as queue:
        assert queue.count() == 1
