"""A 12 MB upload against a 10 MB limit, through a real gunicorn server on 127.0.0.1."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10 * 1024 * 1024
UPLOAD = 12 * 1024 * 1024
PASSWORD = "correct horse battery"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flask_command(environment, *arguments):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def gunicorn_server(tmp_path):
    """gunicorn with its own SQLite database, instance folder and temporary folder."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environment = {
        **{name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")},
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'floyo.db'}",
        "SECRET_KEY": "gunicorn-test",
        "FILE_MAX_UPLOAD_BYTES": str(LIMIT),
        "TMPDIR": str(temporary),
    }
    flask_command(environment, "db", "upgrade")
    flask_command(
        environment, "floyo", "create-user", "--email", "big@example.com", "--password", "correct horse battery"
    )
    key = flask_command(environment, "floyo", "create-api-key", "--email", "big@example.com").strip().splitlines()[-1]

    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    server = subprocess.Popen(
        [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "60", "wsgi:app"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/signin", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        yield {"base": base, "key": key, "instance": tmp_path / "instance", "tmp": temporary}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def stored_files(server):
    root = server["instance"] / "files"
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def test_api_upload_over_limit_gets_413(gunicorn_server):
    response = requests.post(
        f"{gunicorn_server['base']}/api/v1/files/upload",
        headers={"Authorization": f"Bearer {gunicorn_server['key']}"},
        files={"file": ("big.bin", b"\x00" * UPLOAD)},
        timeout=60,
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "larger than the limit of 10.0 MB per file" in response.json()["error"]["message"]
    assert stored_files(gunicorn_server) == []
    assert list(gunicorn_server["tmp"].iterdir()) == []


def test_page_upload_over_limit_gets_413(gunicorn_server):
    session = requests.Session()
    signin_page = session.get(f"{gunicorn_server['base']}/signin", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', signin_page).group(1)
    session.post(
        f"{gunicorn_server['base']}/signin",
        data={"email": "big@example.com", "password": PASSWORD, "csrf_token": token},
        timeout=10,
    )
    files_page = session.get(f"{gunicorn_server['base']}/files", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', files_page).group(1)

    response = session.post(
        f"{gunicorn_server['base']}/files/upload",
        data={"csrf_token": token},
        files={"file": ("big.bin", b"\x00" * UPLOAD)},
        timeout=60,
    )

    assert response.status_code == 413
    assert "text/html" in response.headers["Content-Type"]
    assert "larger than the limit of 10.0 MB per file" in response.text
    assert stored_files(gunicorn_server) == []
    assert list(gunicorn_server["tmp"].iterdir()) == []
