"""Benchmark: p95 of the analytics page for an organization with ten million events, over p95 of sign-in.

Fills the rollups of one organization as ten million events over the last 365 days would (20
members, working hours, several types, tools and paths) with server-side INSERT ... SELECT on
PostgreSQL, starts gunicorn on 127.0.0.1 and times both pages in the same run, interleaved.
The raw events table stays empty: the page reads only the rollups, which is what is measured.

    python bench/analytics.py --database-url postgresql://postgres@127.0.0.1:5432/floyo_bench

The database named in the URL is dropped and created again.
"""

import argparse
import importlib.util
import itertools
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "bench@example.com"
PASSWORD = "correct horse battery"
EVENTS = 10_000_000
MEMBERS = 20
DAYS = 365

# Weekday working hours of the last DAYS days.
HOURS_CTE = """
hours AS (
    SELECT h AS hour_start
    FROM generate_series(
        date_trunc('hour', now() - interval '{days} days'), date_trunc('hour', now()), interval '1 hour'
    ) AS h
    WHERE extract(hour FROM h) BETWEEN 7 AND 18 AND extract(isodow FROM h) < 6
)"""

# Each (member, working hour) gets rows for 3 type/tool/extension combinations...
FILL_SQL = (
    "WITH"
    + HOURS_CTE
    + """,
members AS (SELECT unnest(:user_ids) AS user_id),
combos AS (
    SELECT * FROM (VALUES
        ('file_modified', 'code', 'py'), ('file_opened', 'vim', 'md'), ('command_executed', 'make', '')
    ) AS c(type, tool, ext)
)
INSERT INTO analytics_hourly
SELECT :org_id, hours.hour_start, members.user_id, combos.type, combos.tool, combos.ext, :per_row
FROM hours CROSS JOIN members CROSS JOIN combos
"""
)

# ... and five paths out of 400, varying by member and hour.
FILL_PATHS_SQL = (
    "WITH"
    + HOURS_CTE
    + """,
members AS (SELECT unnest(:user_ids) AS user_id),
picks AS (
    SELECT hours.hour_start, members.user_id,
           'src/module_'
           || ((n * 37 + members.user_id * 11 + extract(epoch FROM hours.hour_start)::bigint / 3600) % 400)
           || '.py' AS path
    FROM hours CROSS JOIN members CROSS JOIN generate_series(1, 5) AS n
)
INSERT INTO analytics_path_hourly (org_id, hour_start, path_key, user_id, type, tool, ext, path, count)
SELECT :org_id, hour_start, encode(sha256(convert_to(path, 'UTF8')), 'hex'), user_id, 'file_modified', 'code', 'py',
       path, :per_row
FROM picks
ON CONFLICT DO NOTHING
"""
)

FILL_SESSIONS_SQL = """
INSERT INTO analytics_sessions (org_id, user_id, session, started_at, ended_at, event_count)
SELECT :org_id, members.user_id, '', d + interval '9 hours' + (s * interval '3 hours'),
       d + interval '9 hours' + (s * interval '3 hours') + ((20 + (s * 17) % 90) * interval '1 minute'), 40
FROM generate_series(date_trunc('day', now() - interval '{days} days'), date_trunc('day', now()), interval '1 day') AS d
CROSS JOIN (SELECT unnest(:user_ids) AS user_id) AS members
CROSS JOIN generate_series(0, 2) AS s
"""


def recreate_database(url):
    engine_url = sa.engine.make_url(url)
    admin = sa.create_engine(engine_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{engine_url.database}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{engine_url.database}"'))
    admin.dispose()


def fill_from_hourly(connection):
    """Fill the daily and type-hourly rollups with the migration that added them."""
    [path] = (ROOT / "migrations" / "versions").glob("592890bf6f22_*.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    migration.fill_from_hourly(connection)


def prepare(environment, events_wanted):
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=environment, check=True
    )
    sys.path.insert(0, str(ROOT))
    os.environ.update(environment)
    from app import create_app
    from app.auth import service as auth_service
    from app.extensions import db
    from app.orgs.models import Membership
    from app.orgs.service import personal_org

    app = create_app()
    with app.app_context():
        owner = auth_service.create_user(EMAIL, PASSWORD)
        db.session.flush()
        org = personal_org(owner)
        user_ids = [owner.id]
        for index in range(1, MEMBERS):
            member = auth_service.create_user(f"member{index}@example.com", PASSWORD)
            db.session.flush()
            db.session.add(Membership(org_id=org.id, user_id=member.id, role="member"))
            user_ids.append(member.id)
        db.session.commit()

        hours = db.session.scalar(
            sa.text(
                "SELECT count(*) FROM generate_series(date_trunc('hour', now() - interval '365 days'), "
                "date_trunc('hour', now()), interval '1 hour') AS h "
                "WHERE extract(hour FROM h) BETWEEN 7 AND 18 AND extract(isodow FROM h) < 6"
            )
        )
        per_row = max(1, events_wanted // (hours * MEMBERS * 3))
        parameters = {"org_id": org.id, "user_ids": user_ids, "per_row": per_row}
        db.session.execute(sa.text(FILL_SQL.format(days=DAYS)), parameters)
        db.session.execute(sa.text(FILL_PATHS_SQL.format(days=DAYS)), {**parameters, "per_row": per_row * 3 // 5})
        db.session.execute(sa.text(FILL_SESSIONS_SQL.format(days=DAYS)), parameters)
        # The daily and type-hourly rollups hold the hourly ones summed; the migration that added
        # them fills them the same way.
        fill_from_hourly(db.session.connection())
        db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        counts = {
            table: db.session.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in (
                "analytics_hourly",
                "analytics_path_hourly",
                "analytics_daily",
                "analytics_type_hourly",
                "analytics_path_daily",
                "analytics_sessions",
            )
        }
        events = db.session.scalar(sa.text("SELECT sum(count) FROM analytics_hourly"))
    return events, counts


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def p95(samples):
    return statistics.quantiles(samples, n=20)[18]


def timed_get(session, url):
    started = time.perf_counter()
    response = session.get(url, timeout=60)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def shifted_range(days, shift, path=None):
    """Return the URL of a custom range of `days` days that ends `shift` days before today (UTC)."""
    end = datetime.now(UTC).date() - timedelta(days=shift)
    url = f"/analytics?from={end - timedelta(days=days - 1)}&to={end}"
    return f"{url}&path={path}" if path else url


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL; this database is dropped and created.")
    parser.add_argument("--requests", type=int, default=200, help="Timed requests per page (default 200).")
    parser.add_argument(
        "--events", type=int, default=EVENTS, help="Events the rollups count, about (default ten million)."
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2).")
    arguments = parser.parse_args()

    instance = tempfile.mkdtemp(prefix="floyo-bench-")
    environment = {
        **os.environ,
        "DATABASE_URL": arguments.database_url,
        "INSTANCE_PATH": instance,
        "SECRET_KEY": "bench-secret",
        "LOG_LEVEL": "WARNING",
    }
    environment.pop("REDIS_URL", None)
    recreate_database(arguments.database_url)
    started = time.perf_counter()
    events, counts = prepare(environment, arguments.events)
    print(f"filled rollups for {events:,} events in {time.perf_counter() - started:.1f} s: {counts}")

    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    server = subprocess.Popen(
        [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(arguments.workers), "wsgi:app"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/signin", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.3)
        session = requests.Session()
        page = session.get(f"{base}/signin", timeout=10).text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        session.post(f"{base}/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token}, timeout=10)
        anonymous = requests.Session()

        # Each request of a "cache miss" page asks for a range no request asked for before, so its
        # figures are computed from the rollups; the others repeat a URL and read the cache.
        shifts = itertools.count(1)
        pages = {
            "analytics, last 30 days": lambda: "/analytics",
            "analytics, last 90 days": lambda: "/analytics?range=90",
            "analytics, 90 days, path prefix": lambda: "/analytics?range=90&path=src/module_1",
            "analytics, 30 days, cache miss": lambda: shifted_range(30, next(shifts)),
            "analytics, 90 days, path prefix, cache miss": lambda: shifted_range(90, next(shifts), "src/module_1"),
        }
        for url in pages.values():
            timed_get(session, base + url())
        for _ in range(10):
            timed_get(anonymous, base + "/signin")

        samples = {name: [] for name in pages}
        samples["sign-in"] = []
        for _ in range(arguments.requests):
            samples["sign-in"].append(timed_get(anonymous, base + "/signin"))
            for name, url in pages.items():
                samples[name].append(timed_get(session, base + url()))
    finally:
        server.terminate()
        server.wait(timeout=30)

    baseline = p95(samples["sign-in"])
    print(f"{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'p95 / sign-in p95':>18}")
    for name, values in samples.items():
        median_ms = statistics.median(values) * 1000
        print(f"{name:<36} {median_ms:>8.1f} {p95(values) * 1000:>8.1f} {p95(values) / baseline:>18.2f}")


if __name__ == "__main__":
    main()
