"""Fixtures shared by the whole suite.

The suite runs in one of two modes, chosen by the environment:
- embedded (default): a fresh SQLite file per test and the in-process queue;
- full: FLOYO_TEST_DATABASE_URL (PostgreSQL) and FLOYO_TEST_REDIS_URL set. The database is
  created and migrated once per run, emptied after each test, and two real `rq worker`
  processes run the jobs.
"""

import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from app.auth import service as auth_service
from app.auth.scopes import ROLE_SCOPES
from app.extensions import db
from app.orgs.service import personal_org
from app.queue import get_queues

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_DATABASE_URL = os.environ.get("FLOYO_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("FLOYO_TEST_REDIS_URL", "")
FULL_MODE = bool(TEST_DATABASE_URL)
PASSWORD = "correct horse battery"


def pytest_report_header(config):
    if FULL_MODE:
        return f"floyo mode: full (PostgreSQL {TEST_DATABASE_URL}, Redis {TEST_REDIS_URL}, rq worker processes)"
    return "floyo mode: embedded (SQLite, in-process queue)"


def _recreate_postgres_database(url):
    engine_url = sa.engine.make_url(url)
    admin = sa.create_engine(engine_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{engine_url.database}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{engine_url.database}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def full_mode_services(tmp_path_factory):
    """In full mode: a migrated PostgreSQL database and two rq worker processes, for the whole run."""
    if not FULL_MODE:
        yield None
        return
    if not TEST_REDIS_URL:
        pytest.exit("FLOYO_TEST_DATABASE_URL is set but FLOYO_TEST_REDIS_URL is not; set both for the full mode.")
    instance = tmp_path_factory.mktemp("instance")
    _recreate_postgres_database(TEST_DATABASE_URL)
    environment = {
        **os.environ,
        "DATABASE_URL": TEST_DATABASE_URL,
        "REDIS_URL": TEST_REDIS_URL,
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": "test-secret",
    }
    os.environ.update({"DATABASE_URL": TEST_DATABASE_URL, "REDIS_URL": TEST_REDIS_URL})
    migrate = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    if migrate.returncode != 0:
        pytest.exit(f"Migrating the test database failed:\n{migrate.stderr}")

    import redis

    connection = redis.Redis.from_url(TEST_REDIS_URL)
    connection.flushdb()
    rq = str(Path(sys.executable).with_name("rq"))
    workers = [
        subprocess.Popen(
            [rq, "worker", "-w", "app.queue.FloyoWorker", "--url", TEST_REDIS_URL, "default", "analysis"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=open(instance / f"worker-{index}.log", "w"),
        )
        for index in range(2)
    ]
    yield {"instance": instance, "redis": connection, "workers": workers}
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()


# A Unix time that starts a window of 60, 300 and 3600 seconds alike (30,000,000 minutes).
RATE_LIMIT_EPOCH = 1_800_000_000


@pytest.fixture(autouse=True)
def rate_limit_clock(monkeypatch):
    """Start each test at the beginning of the rate-limit windows, with time running as usual.

    Limits count in fixed windows, so a test that crossed a window boundary on the real clock
    would see its attempts split over two windows and fail now and then.
    """
    started = time.time()
    clock = types.SimpleNamespace(time=lambda: RATE_LIMIT_EPOCH + (time.time() - started))
    monkeypatch.setattr("app.ratelimit.time", clock)


@pytest.fixture
def app(tmp_path, full_mode_services):
    if FULL_MODE:
        settings = {
            "INSTANCE_PATH": str(full_mode_services["instance"]),
            "SQLALCHEMY_DATABASE_URI": re.sub(r"^postgresql://", "postgresql+psycopg://", TEST_DATABASE_URL),
            "REDIS_URL": TEST_REDIS_URL,
        }
    else:
        settings = {"INSTANCE_PATH": str(tmp_path / "instance"), "REDIS_URL": ""}
    settings.update({"TESTING": True, "SECRET_KEY": "test-secret", "WTF_CSRF_ENABLED": False, "MAIL_BACKEND": "memory"})
    app = create_app(settings)

    with app.app_context():
        if not FULL_MODE:
            db.create_all()
    yield app

    queues = get_queues(app)
    queues.wait_until_idle(timeout=30)
    with app.app_context():
        db.session.remove()
        if FULL_MODE:
            tables = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
            with db.engine.begin() as connection:
                connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            for key in queues.connection.scan_iter("floyo:*"):
                queues.connection.delete(key)
        db.engine.dispose()
    queues.stop_embedded_worker()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_user(app):
    """Build a user with a personal organization: make_user(email=..., password=..., is_admin=...)."""
    counter = iter(range(1, 10_000))

    def build(email=None, password=PASSWORD, name="", is_admin=False):
        with app.app_context():
            user = auth_service.create_user(
                email or f"user{next(counter)}@example.com", password, name=name, is_admin=is_admin
            )
            db.session.commit()
            return {"id": user.id, "email": user.email, "password": password, "org_id": personal_org(user).id}

    return build


@pytest.fixture
def make_api_key(app):
    """Create an API key for a user dict from make_user; returns the raw key.

    The key gets every scope the user's role in the organization allows unless `scopes` is given;
    `org_id` (default: the user dict's) picks the organization.
    """

    def build(user, name="test key", scopes=None, org_id=None):
        with app.app_context():
            account = auth_service.find_user_by_email(user["email"])
            org_id = org_id or user["org_id"]
            if scopes is None:
                scopes = ROLE_SCOPES[auth_service.role_in(account, org_id)]
            raw, _ = auth_service.create_api_key(account, org_id, name, scopes=scopes)
            db.session.commit()
            return raw

    return build


class AuthActions:
    def __init__(self, client):
        self.client = client

    def signin(self, email, password=PASSWORD, **extra):
        return self.client.post("/signin", data={"email": email, "password": password, **extra})

    def signout(self):
        return self.client.post("/signout")


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def wait_for_jobs(app):
    """Block until the queue is empty and no job is running; fails the test after `timeout`."""

    def wait(timeout=60):
        deadline = time.monotonic() + timeout
        assert get_queues(app).wait_until_idle(timeout=timeout), "background jobs did not finish in time"
        return deadline

    return wait


@pytest.fixture
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"real data folder {SHARED_DATA} is missing")
    return SHARED_DATA
