"""Error reporting to Sentry: an unhandled error reaches a Sentry endpoint on 127.0.0.1."""

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.monitoring import sentry


class _Collector(BaseHTTPRequestHandler):
    """Store every request body a Sentry client sends, unzipped."""

    bodies = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sentry_server():
    sentry_sdk = pytest.importorskip("sentry_sdk")
    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://publickey@127.0.0.1:{server.server_port}/1", _Collector.bodies
    # Leave no client behind: sentry-sdk's client is global to the process.
    sentry_sdk.init(dsn=None)
    server.shutdown()
    thread.join(timeout=10)


def test_unhandled_error_is_reported(app, client, sentry_server):
    import sentry_sdk

    dsn, bodies = sentry_server
    app.config["SENTRY_DSN"] = dsn
    sentry.init_app(app)

    def explode():
        raise ZeroDivisionError("boom in a view")

    app.add_url_rule("/test-explode", "test_explode", explode)

    response = client.get("/test-explode")
    sentry_sdk.flush(timeout=10)

    assert response.status_code == 500
    assert any(b"boom in a view" in body for body in bodies)
    assert not any(b"test-secret" in body for body in bodies)


def test_without_dsn_nothing_is_set_up(app):
    app.config["SENTRY_DSN"] = ""

    sentry.init_app(app)

    sentry_sdk = pytest.importorskip("sentry_sdk")
    assert sentry_sdk.get_client().dsn is None
