"""Builders and local servers shared by the workflow and integration tests (this module has no tests).

Runs that need settings of the test's own app (the outbound allow-list, short recovery times)
execute in the test process with `run_inline`; runs that go through the queue use `finish_run`,
which also plays the scheduler for delays and retries.
"""

import json
import socketserver
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.extensions import db
from app.timeutil import utcnow
from app.workflows import runs as run_service
from app.workflows.models import WorkflowRun
from app.workflows.runner import execute_run
from app.workflows.scheduler import Scheduler


def step(step_id, step_type, config, **extra):
    return {"id": step_id, "type": step_type, "config": config, **extra}


def definition(*steps, name="Test workflow", trigger=None):
    return {"name": name, "trigger": trigger or {"type": "manual"}, "steps": list(steps)}


@pytest.fixture
def member(make_user, make_api_key):
    """A user with an API key: {"id", "email", "org_id", "key", "headers"}."""
    user = make_user()
    key = make_api_key(user)
    return {**user, "key": key, "headers": {"Authorization": f"Bearer {key}"}}


@pytest.fixture
def other_member(make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    return {**user, "key": key, "headers": {"Authorization": f"Bearer {key}"}}


def create_workflow(client, member, document, note=""):
    response = client.post("/api/v1/workflows", json={"definition": document, "note": note}, headers=member["headers"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def run_inline(app, workflow_id, org_id, data=None, user_id=None, timeout=30):
    """Create a run without enqueueing it and execute it in this process until it ends."""
    with app.app_context():
        run = run_service.execute_manually(org_id, workflow_id, user_id, data)
        db.session.info.pop("floyo_pending_jobs", None)
        db.session.commit()
        run_id = run.id
    return continue_inline(app, run_id, timeout)


def continue_inline(app, run_id, timeout=30):
    """Execute a queued run in this process, waking it whenever it waits, until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            execute_run(run_id)
            run = db.session.get(WorkflowRun, run_id)
            status, wake_at = run.status, run.wake_at
            if status == "waiting":
                pause = (wake_at - datetime.now(UTC)).total_seconds()
                time.sleep(max(pause, 0) + 0.01)
                run.status = "queued"
                run.wake_at = None
                db.session.commit()
            db.session.remove()
        if status not in ("queued", "running", "waiting"):
            return status
    raise AssertionError(f"run {run_id} did not end in {timeout} seconds")


def finish_run(app, run_id, timeout=60):
    """Wait for a queued run to end on the workers, playing the scheduler for its delays and retries."""
    scheduler = Scheduler(app)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            run = db.session.get(WorkflowRun, run_id)
            status = run.status
            db.session.remove()
        if status not in ("queued", "running", "waiting"):
            return status
        scheduler.tick()
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is still {status} after {timeout} seconds")


def load_run(app, run_id):
    """The run as a dict with its attempts, read fresh from the database."""
    with app.app_context():
        run = db.session.get(WorkflowRun, run_id)
        data = {
            "status": run.status,
            "error": run.error,
            "version": run.version_number,
            "input": run.input,
            "attempts": [
                {
                    "step": attempt.step_id,
                    "number": attempt.number,
                    "status": attempt.status,
                    "output": attempt.output,
                    "input": attempt.input,
                    "error": attempt.error,
                    "log": attempt.log,
                    "started_at": attempt.started_at,
                }
                for attempt in run.attempts
            ],
        }
        db.session.remove()
        return data


def statuses(run):
    """{step id: status of its last attempt}."""
    return {attempt["step"]: attempt["status"] for attempt in run["attempts"]}


class RecordingServer:
    """An HTTP server on 127.0.0.1 that records requests; `respond(request)` returns (status, headers, body)."""

    def __init__(self, respond=None):
        self.requests = []
        self.respond = respond or (lambda request: (200, {"Content-Type": "application/json"}, b'{"ok": true}'))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                server.requests.append(request)
                status, headers, payload = server.respond(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def json_response(data, status=200):
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


class SmtpServer:
    """A minimal SMTP server on 127.0.0.1 that keeps every message it receives (no TLS, no auth)."""

    def __init__(self):
        self.messages = []
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 test ESMTP\r\n")
                message = {"from": None, "to": [], "data": b""}
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    command = line.decode().strip()
                    upper = command.upper()
                    if upper.startswith(("EHLO", "HELO")):
                        self.wfile.write(b"250-test\r\n250 OK\r\n")
                    elif upper.startswith("MAIL FROM"):
                        message["from"] = command[10:].strip()
                        self.wfile.write(b"250 OK\r\n")
                    elif upper.startswith("RCPT TO"):
                        message["to"].append(command[8:].strip())
                        self.wfile.write(b"250 OK\r\n")
                    elif upper == "DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b""):
                                break
                            data += chunk
                        message["data"] = data
                        server.messages.append(dict(message))
                        self.wfile.write(b"250 queued\r\n")
                    elif upper == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 OK\r\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def now():
    return utcnow()


def wait_for_status(app, run_id, wanted, timeout=30):
    """Poll until the run's status is one of `wanted`; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            status = db.session.scalar(db.select(WorkflowRun.status).where(WorkflowRun.id == run_id))
            db.session.remove()
        if status in wanted:
            return status
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is {status}, not one of {wanted}, after {timeout} seconds")
