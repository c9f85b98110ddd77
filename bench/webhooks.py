"""Benchmark: p99 response time of an authentic Stripe delivery under load, over p99 of /healthz.

Starts gunicorn on 127.0.0.1 against PostgreSQL and Redis (and one `rq worker` that applies the
deliveries, so the database sees the jobs' writes too), then sends signed `invoice.paid` events
shaped like Stripe's sample invoice, each with a new event id, interleaved with `GET /healthz`,
from several client threads at once. Both kinds of request wait for the same gunicorn workers,
so the ratio shows what verifying, storing and enqueueing a delivery adds.

    python bench/webhooks.py --database-url postgresql://postgres@127.0.0.1:5432/floyo_bench \
        --redis-url redis://127.0.0.1:6379/15

The database named in the URL is dropped and created again, and the Redis database is flushed.
"""

import argparse
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests
import sqlalchemy as sa
import stripe

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INVOICE = ROOT.parent / "shared" / "data" / "stripe" / "invoice.json"
SAMPLE_EVENT = ROOT.parent / "shared" / "data" / "stripe" / "event.json"
WEBHOOK_SECRET = "whsec_bench_secret"
CUSTOMER = "cus_bench"


def recreate_database(url):
    engine_url = sa.engine.make_url(url)
    admin = sa.create_engine(engine_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{engine_url.database}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{engine_url.database}"'))
    admin.dispose()


def prepare(environment):
    """Migrate the database and link the Stripe customer the events name to a new organization."""
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=environment, check=True
    )
    sys.path.insert(0, str(ROOT))
    os.environ.update(environment)
    from app import create_app
    from app.auth import service as auth_service
    from app.billing.models import BillingAccount
    from app.extensions import db
    from app.orgs.service import personal_org

    app = create_app()
    with app.app_context():
        user = auth_service.create_user("bench@example.com", "correct horse battery")
        db.session.flush()
        db.session.add(BillingAccount(org_id=personal_org(user).id, stripe_customer_id=CUSTOMER, plan="free"))
        db.session.commit()


class Deliveries:
    """Signed invoice.paid deliveries, each a new event for a new invoice, pretty-printed like Stripe's."""

    def __init__(self):
        self.event = json.loads(SAMPLE_EVENT.read_text())
        self.invoice = json.loads(SAMPLE_INVOICE.read_text())

    def next(self):
        invoice = copy.deepcopy(self.invoice)
        invoice.update(id=f"in_{uuid.uuid4().hex[:24]}", customer=CUSTOMER, status="paid", amount_paid=2000)
        event = dict(self.event, id=f"evt_{uuid.uuid4().hex[:24]}", type="invoice.paid", created=int(time.time()))
        event["data"] = {"object": invoice}
        body = json.dumps(event, indent=2)
        return body.encode(), stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def p99(samples):
    return statistics.quantiles(samples, n=100)[98]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL; this database is recreated.")
    parser.add_argument("--redis-url", required=True, help="Redis URL; this Redis database is flushed.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests of each kind (default 2000).")
    parser.add_argument("--concurrency", type=int, default=8, help="Client threads sending at once (default 8).")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes (default 4).")
    arguments = parser.parse_args()

    recreate_database(arguments.database_url)
    redis.Redis.from_url(arguments.redis_url).flushdb()
    instance = tempfile.mkdtemp(prefix="floyo-bench-")
    environment = {
        **os.environ,
        "DATABASE_URL": arguments.database_url,
        "REDIS_URL": arguments.redis_url,
        "INSTANCE_PATH": instance,
        "SECRET_KEY": "bench-secret",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LOG_LEVEL": "WARNING",
    }
    prepare(environment)

    port = free_port()
    binaries = Path(sys.executable).parent
    server = subprocess.Popen(
        [binaries / "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(arguments.workers), "wsgi:app"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [binaries / "rq", "worker", "-w", "app.queue.FloyoWorker", "--url", arguments.redis_url, "default"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deliveries = Deliveries()
    local = threading.local()

    def send(kind):
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        if kind == "healthz":
            started = time.perf_counter()
            response = session.get(f"{base}/healthz", timeout=30)
        else:
            body, signature = deliveries.next()
            started = time.perf_counter()
            response = session.post(
                f"{base}/api/v1/webhooks/stripe",
                data=body,
                headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
                timeout=30,
            )
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{kind} failed with HTTP {response.status_code}: {response.text[:200]}")
        return kind, elapsed

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.3)
        with ThreadPoolExecutor(arguments.concurrency) as pool:
            list(pool.map(send, ["healthz", "stripe"] * 50))
            started = time.perf_counter()
            results = list(pool.map(send, ["healthz", "stripe"] * arguments.requests))
            wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
        worker.terminate()
        worker.wait(timeout=30)

    samples = {"stripe": [], "healthz": []}
    for kind, elapsed in results:
        samples[kind].append(elapsed)
    baseline = p99(samples["healthz"])
    print(
        f"{len(results)} requests in {wall:.1f} s ({len(results) / wall:.0f}/s), "
        f"concurrency {arguments.concurrency}, {arguments.workers} gunicorn workers"
    )
    print(f"{'request':<24} {'p50 ms':>8} {'p99 ms':>8} {'p99 / healthz p99':>18}")
    for name, label in (("stripe", "POST webhooks/stripe"), ("healthz", "GET /healthz")):
        values = samples[name]
        print(
            f"{label:<24} {statistics.median(values) * 1000:>8.1f} {p99(values) * 1000:>8.1f} "
            f"{p99(values) / baseline:>18.2f}"
        )


if __name__ == "__main__":
    main()
