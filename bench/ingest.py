"""Ingest benchmark: events per second through POST /api/v1/events/batch, against a plain COPY.

Run from the repository root, with PostgreSQL and Redis on 127.0.0.1:

    python -m bench.ingest

It creates and migrates its own database, starts gunicorn on a free port, and creates a user and
an API key with the CLI. In one run it then measures (a) events per second through the batch API,
with batches of 1,000 events sent by several client threads, and (b) the rate of a plain COPY of
the same rows into the same table. It prints both rates and their ratio, then stops gunicorn and
drops the database. The analysis jobs that ingest requests go to Redis; no worker runs them here, so
the measurement is of ingest alone.
"""

import argparse
import http.client
import json
import os
import platform
import queue
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.3
EMAIL = "bench@example.com"
COPY_COLUMNS = "org_id, user_id, type, path, tool, occurred_at, session, event_id, metadata, source, received_at"


def parse_args():
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL, without a database."
    )
    parser.add_argument("--database", default="floyo_bench_ingest", help="Database to create, use and drop.")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/11",
        help="Redis database for the app's queues; it is flushed before and after the run.",
    )
    parser.add_argument("--events", type=int, default=200_000, help="Events to send through the API (and to COPY).")
    parser.add_argument("--batch-size", type=int, default=1000, help="Events per API request.")
    parser.add_argument("--workers", type=int, default=2 * cores, help="gunicorn sync workers (default: 2 x cores).")
    parser.add_argument("--clients", type=int, default=0, help="Client threads (default: workers + 2).")
    parser.add_argument("--time-limit", type=float, default=300, help="Seconds after which sending stops.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the generated events.")
    parser.add_argument("--wsgi-app", default="wsgi:app", help="The WSGI app gunicorn serves, as module:name.")
    return parser.parse_args()


def main():
    args = parse_args()
    args.clients = args.clients or args.workers + 2
    workdir = Path(tempfile.mkdtemp(prefix="floyo-bench-ingest-"))
    database_url = f"{args.server}/{args.database}"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "INSTANCE_PATH": str(workdir / "instance"),
        "SECRET_KEY": secrets.token_hex(16),
    }
    redis_connection = redis.Redis.from_url(args.redis_url)
    server = None
    try:
        create_database(args.server, args.database)
        redis_connection.flushdb()
        run_cli(environment, "db", "upgrade")
        run_cli(environment, "floyo", "create-user", "--email", EMAIL, "--password", secrets.token_hex(12))
        api_key = run_cli(environment, "floyo", "create-api-key", "--email", EMAIL).strip().splitlines()[-1]

        port = free_port()
        server = start_gunicorn(environment, port, args.workers, args.wsgi_app, workdir / "gunicorn.log")
        wait_until_up(port, server, timeout=60)

        org_id, user_id = account_ids(database_url)
        batches = generate_batches(args.events, args.batch_size, random.Random(args.seed))
        rows = batch_rows(batches, org_id, user_id)
        warm_up(port, api_key, args, random.Random(args.seed + 1))

        # COPY runs before and after the API, each into an empty table, and the ratio uses their
        # mean: on a shared machine the load can change within a run.
        truncate_events(database_url)
        copy_before = copy_rows(database_url, rows)
        truncate_events(database_url)
        api = send_batches(port, api_key, batches, args.clients, args.time_limit)
        stored = count_events(database_url)
        truncate_events(database_url)
        copy_after = copy_rows(database_url, rows[: api["accepted"]])

        report(args, api, stored, copy_before, copy_after)
    finally:
        if server is not None:
            stop_process(server)
        drop_database(args.server, args.database)
        redis_connection.flushdb()
        shutil.rmtree(workdir, ignore_errors=True)


def create_database(server, name):
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(server, name):
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_cli(environment, *arguments):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"flask {' '.join(arguments[:2])} failed:\n{result.stderr}")
    return result.stdout


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(environment, port, workers, wsgi_app, log_path):
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}", wsgi_app],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until_up(port, server, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {server.returncode}; see its log")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not respond on port {port} within {timeout} seconds; see its log")


def stop_process(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def account_ids(database_url):
    with psycopg.connect(database_url) as connection:
        return connection.execute(
            "SELECT m.org_id, u.id FROM users u JOIN memberships m ON m.user_id = u.id WHERE u.email = %s", [EMAIL]
        ).fetchone()


def truncate_events(database_url):
    with psycopg.connect(database_url) as connection:
        connection.execute("TRUNCATE events")


def count_events(database_url):
    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT count(*) FROM events").fetchone()[0]


PROJECT_DIRS = ("src/floyo", "src/floyo/api", "src/floyo/storage", "tests", "docs", "scripts")
EXTENSIONS = (".py", ".py", ".py", ".md", ".toml", ".json", ".html", ".css")
TOOLS = ("vim", "code", "pycharm", "git", "make", "pytest", "black")
TYPES = (
    ("file_modified", 45),
    ("file_opened", 25),
    ("file_created", 8),
    ("file_deleted", 3),
    ("file_moved", 2),
    ("command_executed", 12),
    ("tool_used", 5),
)


def generate_batches(total, batch_size, rng):
    """Build `total` events as in a team's month of work, in batches of (events, serialized body)."""
    paths = [
        f"{rng.choice(PROJECT_DIRS)}/{rng.choice(('module', 'test', 'view', 'model', 'util'))}_{index}"
        f"{rng.choice(EXTENSIONS)}"
        for index in range(2000)
    ]
    type_names = [name for name, _ in TYPES]
    type_weights = [weight for _, weight in TYPES]
    start = datetime(2025, 1, 13, 8, 0, tzinfo=UTC)
    offsets = ("Z", "+01:00", "-05:00", "+05:30")
    batches = []
    session = None
    for first in range(0, total, batch_size):
        events = []
        for number in range(first, min(first + batch_size, total)):
            if number % 12 == 0:
                session = f"commit-{rng.getrandbits(64):016x}" if rng.random() < 0.4 else None
            event_type = rng.choices(type_names, type_weights)[0]
            when = start + timedelta(seconds=number * 13 + rng.randint(0, 12))
            offset = rng.choice(offsets)
            event = {
                "type": event_type,
                "path": "make test" if event_type == "command_executed" else rng.choice(paths),
                "tool": rng.choice(TOOLS),
                "occurred_at": _with_offset(when, offset),
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "metadata": _metadata(event_type, rng),
            }
            if session:
                event["session"] = session
            events.append(event)
        body = json.dumps({"events": events, "source": "agent"}).encode()
        batches.append((events, body))
    return batches


def _with_offset(when, offset):
    if offset == "Z":
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    local = when + sign * timedelta(hours=hours, minutes=minutes)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + offset


def _metadata(event_type, rng):
    if event_type == "file_modified":
        return {"lines_added": rng.randint(0, 80), "lines_deleted": rng.randint(0, 40)}
    if event_type == "command_executed":
        return {"exit_code": rng.choice((0, 0, 0, 1)), "duration_ms": rng.randint(50, 90_000)}
    if event_type == "file_moved":
        return {"from": "old/" + str(rng.randint(1, 99)) + ".py"}
    return {}


def warm_up(port, api_key, args, rng):
    """Send a few batches first so every worker has imported the app and opened its connections."""
    batches = generate_batches(args.workers * 3 * args.batch_size, args.batch_size, rng)
    send_batches(port, api_key, batches, args.clients, args.time_limit)


def send_batches(port, api_key, batches, clients, time_limit):
    """POST the batches from `clients` threads; return how many were sent, the events stored and the time."""
    pending = queue.Queue()
    for _, body in batches:
        pending.put(body)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    totals = {"batches": 0, "accepted": 0, "failures": []}
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < deadline:
            try:
                body = pending.get_nowait()
            except queue.Empty:
                return
            try:
                connection.request("POST", "/api/v1/events/batch", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                with lock:
                    totals["failures"].append(("no response", repr(error)))
                continue
            with lock:
                totals["batches"] += 1
                if response.status == 200:
                    totals["accepted"] += json.loads(answer)["accepted"]
                else:
                    totals["failures"].append((response.status, answer[:300]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals["seconds"] = time.perf_counter() - started
    if totals["failures"]:
        raise SystemExit(f"{len(totals['failures'])} batches failed; first: {totals['failures'][0]}")
    return totals


def batch_rows(batches, org_id, user_id):
    """Build the rows the API stores for these batches, as COPY takes them."""
    received_at = datetime.now(UTC)
    rows = []
    for events, _ in batches:
        for event in events:
            rows.append(
                (
                    org_id,
                    user_id,
                    event["type"],
                    event["path"],
                    event["tool"],
                    datetime.fromisoformat(event["occurred_at"]),
                    event.get("session"),
                    event["event_id"],
                    json.dumps(event["metadata"], separators=(",", ":")),
                    "agent",
                    received_at,
                )
            )
    return rows


def copy_rows(database_url, rows):
    """COPY the rows into the events table in one transaction; return the row count and the time."""
    with psycopg.connect(database_url) as connection:
        started = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(f"COPY events ({COPY_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
        seconds = time.perf_counter() - started
    return {"rows": len(rows), "seconds": seconds}


def report(args, api, stored, copy_before, copy_after):
    api_rate = api["accepted"] / api["seconds"]
    copy_rates = [copy["rows"] / copy["seconds"] for copy in (copy_before, copy_after)]
    copy_rate = sum(copy_rates) / 2
    ratio = api_rate / copy_rate
    with psycopg.connect(f"{args.server}/postgres") as connection:
        server_version = connection.execute("SHOW server_version").fetchone()[0]
    lines = [
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"PostgreSQL {server_version}",
        f"gunicorn: {args.workers} sync workers; clients: {args.clients} threads; batches of {args.batch_size}",
        f"API:  {api['accepted']} events accepted in {api['batches']} batches in {api['seconds']:.2f} s "
        f"= {api_rate:,.0f} events/s (rows in the table: {stored})",
        f"COPY before: {copy_before['rows']} rows in {copy_before['seconds']:.2f} s = {copy_rates[0]:,.0f} rows/s",
        f"COPY after:  {copy_after['rows']} rows in {copy_after['seconds']:.2f} s = {copy_rates[1]:,.0f} rows/s",
        f"ratio API / mean COPY: {api_rate:,.0f} / {copy_rate:,.0f} = {ratio:.2f} (target >= {TARGET_RATIO})",
    ]
    if api["accepted"] < args.events:
        lines.append(f"NOTE: the time limit cut the API run short at {api['accepted']} of {args.events} events.")
    if stored != api["accepted"]:
        lines.append(f"MISMATCH: the API reported {api['accepted']} accepted but the table has {stored} rows.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
