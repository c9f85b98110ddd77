"""Liveness, readiness, /metrics for Prometheus, JSON logs and the monitoring page and API."""

import io
import json
import logging
import socket
import time

import pytest
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app.extensions import db
from app.monitoring.service import migration_heads
from app.queue import QUEUE_NAMES, get_queues

EVENT = {"type": "file_opened", "path": "notes/todo.md", "occurred_at": "2025-02-13T09:16:00+01:00"}


def _closed_port():
    """Return a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _revisions(app):
    with app.app_context(), db.engine.begin() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()


def _set_revisions(app, revisions):
    """Write alembic_version as `flask db stamp` would; embedded tests build tables without Alembic."""
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)"))
        connection.execute(sa.text("DELETE FROM alembic_version"))
        for revision in revisions:
            connection.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES (:r)"), {"r": revision})


@pytest.fixture
def at_head(app):
    """Stamp the database at the migration head, and put back what was there afterwards."""
    before = _revisions(app)
    _set_revisions(app, sorted(migration_heads()))
    yield
    if before is None:
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE alembic_version"))
    else:
        _set_revisions(app, before)


def _previous_revision():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from app.monitoring.service import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    [head] = migration_heads()
    return ScriptDirectory.from_config(config).get_revision(head).down_revision


def test_healthz(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_ok(client, at_head):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
    assert all(check["ok"] for check in response.get_json()["checks"].values())


def test_readyz_reports_stopped_redis_and_recovers(app, client, at_head):
    queues = get_queues(app)
    working = queues.connection
    queues.connection = redis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    try:
        down = client.get("/readyz")
    finally:
        queues.connection = working
    recovered = client.get("/readyz")

    assert down.status_code == 503
    checks = down.get_json()["checks"]
    assert checks["redis"]["ok"] is False
    assert "Redis is unreachable" in checks["redis"]["error"]
    assert checks["database"]["ok"] is True
    assert recovered.status_code == 200


@pytest.mark.parametrize("stamp", ["previous", "empty"])
def test_readyz_reports_unapplied_migration_and_recovers(app, client, at_head, stamp):
    _set_revisions(app, [_previous_revision()] if stamp == "previous" else [])

    behind = client.get("/readyz")
    _set_revisions(app, sorted(migration_heads()))
    recovered = client.get("/readyz")

    assert behind.status_code == 503
    migrations = behind.get_json()["checks"]["migrations"]
    assert migrations["ok"] is False
    assert migrations["head"] == sorted(migration_heads())
    assert "flask db upgrade" in migrations["error"]
    assert behind.get_json()["checks"]["redis"]["ok"] is True
    assert recovered.status_code == 200


def _scrape(client, **kwargs):
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.data
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_parse_and_count_a_request(client):
    before = _scrape(client)

    assert client.get("/healthz").status_code == 200
    after = _scrape(client)

    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    assert (
        _value(after, "floyo_http_requests_total", **labels)
        == _value(before, "floyo_http_requests_total", **labels) + 1
    )
    count = _value(after, "floyo_http_request_duration_seconds_count", method="GET", route="/healthz")
    assert count == _value(before, "floyo_http_request_duration_seconds_count", method="GET", route="/healthz") + 1
    assert (
        _value(after, "floyo_http_request_duration_seconds_bucket", method="GET", route="/healthz", le="+Inf") == count
    )
    assert ("floyo_queue_jobs", (("queue", "default"), ("state", "failed"))) in after


def test_metrics_label_unknown_paths_as_unmatched(client):
    client.get("/no/such/page/1")
    client.get("/no/such/page/2")

    samples = _scrape(client)

    assert _value(samples, "floyo_http_requests_total", method="GET", route="unmatched", status="404") == 2


@pytest.fixture
def no_failed_jobs(app):
    """Start with no failed jobs: the full mode's Redis keeps RQ's keys between tests."""
    from app.admin.queues import delete_all

    with app.app_context():
        for name in QUEUE_NAMES:
            delete_all(name)


def test_metrics_count_jobs_and_events(client, make_user, make_api_key, wait_for_jobs, no_failed_jobs):
    user = make_user()
    key = {"Authorization": f"Bearer {make_api_key(user)}"}
    assert client.post("/api/v1/events", headers=key, json=EVENT).status_code == 201
    # A job that raises in any worker process: math.sqrt of a negative number.
    get_queues(client.application).enqueue("math.sqrt", -1)
    wait_for_jobs()

    # A worker process that has just started builds the app between taking a job off the queue and
    # marking it started, so the queue can look idle while a job is still to run.
    failed = {"queue": "default", "function": "math.sqrt", "status": "failed"}
    finished = {"queue": "analysis", "function": "app.insights.jobs.run_analysis_job", "status": "finished"}
    deadline = time.monotonic() + 30
    samples = _scrape(client)
    while time.monotonic() < deadline and not (
        _value(samples, "floyo_job_runs_total", **failed) and _value(samples, "floyo_job_runs_total", **finished)
    ):
        time.sleep(0.1)
        samples = _scrape(client)

    assert _value(samples, "floyo_job_runs_total", **finished) == 1
    assert _value(samples, "floyo_job_runs_total", **failed) == 1
    assert _value(samples, "floyo_job_duration_seconds_count", queue="default", function="math.sqrt") == 1
    assert _value(samples, "floyo_queue_jobs", queue="default", state="failed") == 1
    assert _value(samples, "floyo_events_ingested_total") == 1


def test_metrics_need_token_or_allowed_address(app, client):
    app.config["METRICS_TOKEN"] = "scrape-secret"
    outside = {"REMOTE_ADDR": "203.0.113.9"}

    refused = client.get("/metrics", environ_base=outside)
    wrong = client.get("/metrics", environ_base=outside, headers={"Authorization": "Bearer nope"})
    with_token = client.get("/metrics", environ_base=outside, headers={"Authorization": "Bearer scrape-secret"})
    local = client.get("/metrics")

    assert refused.status_code == 403
    assert b"METRICS_TOKEN" in refused.data
    assert wrong.status_code == 403
    assert with_token.status_code == 200
    assert with_token.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert local.status_code == 200


def test_metrics_allowed_network(app, client):
    from app.monitoring.metrics import parse_networks

    app.extensions["floyo_metrics_networks"] = parse_networks("10.0.0.0/8")

    inside = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.20.30.40"})
    loopback = client.get("/metrics")

    assert inside.status_code == 200
    assert loopback.status_code == 403


def test_invalid_allowed_addresses_setting_fails_at_start():
    from app.monitoring.metrics import parse_networks

    with pytest.raises(RuntimeError, match="METRICS_ALLOWED_ADDRESSES"):
        parse_networks("10.0.0.0/8, not-an-address")


def test_json_logs_carry_request_user_and_org(app, client, auth, make_user):
    app.config["LOG_FORMAT"] = "json"
    from app.logs import configure_logging

    configure_logging(app)
    [handler] = [item for item in logging.getLogger().handlers if getattr(item, "floyo", False)]
    stream = io.StringIO()
    handler.setStream(stream)
    user = make_user()
    auth.signin(user["email"])

    client.post("/settings/api-keys", data={"name": "laptop"}, headers={"X-Request-ID": "req-123"})

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    [created] = [line for line in lines if line["message"].startswith("api key created")]
    assert created["request_id"] == "req-123"
    assert created["user_id"] == user["id"]
    assert created["org_id"] == user["org_id"]


def test_json_logs_carry_job_id(app, client, make_user, make_api_key, wait_for_jobs):
    if app.config["REDIS_URL"]:
        pytest.skip("jobs run in rq worker processes in the full mode; their logs are not in this process")
    app.config["LOG_FORMAT"] = "json"
    from app.logs import configure_logging

    configure_logging(app)
    [handler] = [item for item in logging.getLogger().handlers if getattr(item, "floyo", False)]
    stream = io.StringIO()
    handler.setStream(stream)
    user = make_user()

    client.post("/api/v1/events", headers={"Authorization": f"Bearer {make_api_key(user)}"}, json=EVENT)
    wait_for_jobs()

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    started = [line for line in lines if line["message"].startswith("analysis started")]
    assert started and started[0]["job_id"]


# The monitoring page and API, for site admins


@pytest.fixture
def admin_headers(make_user, make_api_key):
    admin = make_user(email="admin@example.com", is_admin=True)
    return {"Authorization": f"Bearer {make_api_key(admin)}"}


def test_monitoring_page(client, auth, make_user, at_head):
    admin = make_user(email="admin@example.com", is_admin=True)
    auth.signin(admin["email"])
    client.get("/healthz")

    response = client.get("/admin/monitoring")

    assert response.status_code == 200
    assert b"Requests in the last hour" in response.data
    assert b"/healthz" in response.data
    assert b"Largest tables" in response.data


def test_monitoring_api_metrics(client, admin_headers):
    client.get("/healthz")

    body = client.get("/api/v1/monitoring/metrics", headers=admin_headers).get_json()

    assert len(body["per_minute"]) == 60
    assert body["per_minute"][-1]["requests"] >= 1
    assert any(row["route"] == "/healthz" for row in body["routes"])


def test_monitoring_api_cache_shows_rate_limits(client, admin_headers, make_user):
    user = make_user()
    client.post("/signin", data={"email": user["email"], "password": "wrong password"})

    body = client.get("/api/v1/monitoring/cache", headers=admin_headers).get_json()

    assert body["keys"] >= 1
    assert any(row["count"] >= 1 for row in body["rate_limits"])


def test_monitoring_api_database(client, admin_headers):
    body = client.get("/api/v1/monitoring/database", headers=admin_headers).get_json()

    tables = {row["table"] for row in body["tables"]}
    assert "users" in tables
    assert body["database_bytes"] > 0
    if body["dialect"] == "postgresql":
        assert body["connections"]
        assert body["slow_queries"] is not None or any("pg_stat_statements" in note for note in body["notes"])
    else:
        assert body["slow_queries"] is None
        assert any("SQLite" in note for note in body["notes"])
