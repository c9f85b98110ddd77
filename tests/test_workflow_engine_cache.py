"""The run engine's per-process shortcuts: prepared definitions, the endpoint check and idle pings."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
import test_workflow_helpers
from sqlalchemy import event
from test_workflow_helpers import continue_inline, create_workflow, definition, load_run, run_inline, step

from app import queue
from app.extensions import db
from app.webhooks.models import OutgoingDelivery
from app.webhooks.outgoing import create_endpoint
from app.workflows.models import WorkflowVersion
from app.workflows.runs import execute_manually

member = test_workflow_helpers.member


def label_step(label):
    return step("label", "transform", {"input": {"label": label}})


def rewrite_version(app, workflow_id, document, shift_created_at):
    """Replace the stored definition of version 1 in place, as a recreated database would hold it."""
    with app.app_context():
        version = db.session.scalar(db.select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow_id))
        version.definition = document
        if shift_created_at:
            version.created_at = version.created_at + timedelta(seconds=1)
        db.session.commit()
        db.session.remove()


@pytest.mark.parametrize(
    ("shift_created_at", "expected"),
    [(False, "first"), (True, "second")],
)
def test_prepared_definition_keyed_by_version(app, client, member, shift_created_at, expected):
    workflow = create_workflow(client, member, definition(label_step("first")))
    first = run_inline(app, workflow["id"], member["org_id"])
    rewrite_version(app, workflow["id"], definition(label_step("second")), shift_created_at)

    with app.app_context():
        run = execute_manually(member["org_id"], workflow["id"], member["id"])
        db.session.info.pop("floyo_pending_jobs", None)
        db.session.commit()
        run_id = run.id
        db.session.remove()
    second = continue_inline(app, run_id)

    assert first == "succeeded"
    assert second == "succeeded"
    assert load_run(app, run_id)["attempts"][0]["output"] == {"label": expected}


def test_run_end_emits_to_new_endpoint(app, client, member):
    workflow = create_workflow(client, member, definition(label_step("x")))
    before = run_inline(app, workflow["id"], member["org_id"])
    with app.app_context():
        # A loopback URL, so no request leaves this machine (the outbound guard rejects it by default).
        create_endpoint(member["org_id"], "http://127.0.0.1:9/floyo", ["workflow_run.succeeded"])
        db.session.commit()
        db.session.remove()

    after = run_inline(app, workflow["id"], member["org_id"])

    with app.app_context():
        deliveries = db.session.scalars(db.select(OutgoingDelivery).where(OutgoingDelivery.org_id == member["org_id"]))
        types = [delivery.event_type for delivery in deliveries]
        db.session.remove()
    assert before == "succeeded"
    assert after == "succeeded"
    assert types == ["workflow_run.succeeded"]


def worker_engine(tmp_path):
    """An engine without the pool's pre-ping, as the rq workers have, with the idle ping installed."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ping.db'}")
    queue._ping_idle_connections(engine)
    return engine


def test_idle_connection_pinged_once(tmp_path, monkeypatch):
    engine = worker_engine(tmp_path)
    pings = []
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: pings.append(connection) or True)

    for _ in range(2):
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    busy_pings = len(pings)
    monkeypatch.setattr(queue, "POOL_PING_IDLE_SECONDS", 0.0)
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")

    assert busy_pings == 0
    assert len(pings) == 1
    engine.dispose()


def test_failed_ping_replaces_connection(tmp_path, monkeypatch):
    engine = worker_engine(tmp_path)
    opened = []
    event.listen(engine, "connect", lambda connection, record: opened.append(connection))
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")

    def fail(connection):
        raise engine.dialect.loaded_dbapi.OperationalError("server closed the connection")

    monkeypatch.setattr(engine.dialect, "do_ping", fail)
    monkeypatch.setattr(queue, "_ping_next_checkout", True)
    with engine.connect() as connection:
        value = connection.exec_driver_sql("SELECT 1").scalar()

    assert value == 1
    assert len(opened) == 2
    assert queue._ping_next_checkout is False
    engine.dispose()
