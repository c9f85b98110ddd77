"""Workflow benchmark: runs per second of a three-step transform workflow on two rq workers,
against the rate of the same number of no-op RQ jobs on the same workers.

Run from the repository root, with PostgreSQL and Redis on 127.0.0.1:

    python -m bench.workflows

It creates and migrates its own database, creates a user and a workflow of three `transform`
steps, and starts two `rq worker -w app.queue.FloyoWorker` processes. In one run it then measures
(a) no-op jobs: N jobs of a function that does nothing, enqueued at once, timed until the last
one has finished; and (b) workflow runs: N queued runs inserted and committed, their N jobs
enqueued at once, timed until the last job has finished, then checked that every run succeeded.
It alternates the two phases --rounds times with N / rounds each and adds up the times.
It prints both rates, their ratio and the load average, stops the workers and drops the database.
"""

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.5
TARGET_RUNS_PER_SECOND = 220
QUEUE = "default"
DEFINITION = {
    "name": "Benchmark: three transforms",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "pick",
            "type": "transform",
            "config": {"input": "{{ trigger }}", "operations": [{"pick": ["path", "size", "tool"]}]},
        },
        {
            "id": "rename",
            "type": "transform",
            "depends_on": ["pick"],
            "config": {"input": "{{ steps.pick.output }}", "operations": [{"rename": {"path": "file"}}]},
        },
        {
            "id": "label",
            "type": "transform",
            "depends_on": ["rename"],
            "config": {
                "input": "{{ steps.rename.output }}",
                "operations": [{"map": {"label": "{{ item.file }} ({{ item.size }} bytes)"}}],
            },
        },
    ],
}


def noop():
    """The job of the baseline: nothing, so its rate is the queue's and the workers' own."""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL, without a database."
    )
    parser.add_argument("--database", default="floyo_bench_workflows", help="Database to create, use and drop.")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/10", help="Redis database; flushed before and after the run."
    )
    parser.add_argument("--runs", type=int, default=3000, help="Workflow runs, and no-op jobs, to measure.")
    parser.add_argument("--workers", type=int, default=2, help="rq worker processes.")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="Alternate the no-op and the run phase this many times, each with a share of --runs, so that a"
        " change of the machine's load during the run affects both rates alike.",
    )
    parser.add_argument("--time-limit", type=float, default=300, help="Seconds to wait for each phase.")
    args = parser.parse_args()
    if args.rounds < 1 or args.runs < args.rounds:
        parser.error(f"--rounds must be between 1 and --runs ({args.runs}), got {args.rounds}")
    return args


def _admin(server):
    return psycopg.connect(f"{server}/postgres", autocommit=True)


def main():
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="floyo-bench-workflows-"))
    database_url = f"{args.server}/{args.database}"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "INSTANCE_PATH": str(workdir / "instance"),
        "SECRET_KEY": secrets.token_hex(16),
        "LOG_LEVEL": "WARNING",
    }
    connection = redis.Redis.from_url(args.redis_url)
    connection.flushdb()
    with _admin(args.server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.database}"')
    workers = []
    try:
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
            cwd=ROOT,
            env=environment,
            check=True,
            capture_output=True,
        )
        os.environ.update(
            {key: environment[key] for key in ("DATABASE_URL", "REDIS_URL", "INSTANCE_PATH", "SECRET_KEY")}
        )
        from app import create_app

        app = create_app()
        org_id, workflow_id, version_id = _create_workflow(app)
        rq = str(Path(sys.executable).with_name("rq"))
        workers = [
            subprocess.Popen(
                [rq, "worker", "-w", "app.queue.FloyoWorker", "--url", args.redis_url, "--path", str(ROOT)]
                + ["--logging_level", "WARNING", QUEUE],
                cwd=ROOT,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / f"worker-{index}.log", "w"),
            )
            for index in range(args.workers)
        ]
        _warm_up(connection, args)
        load_before = os.getloadavg()
        noop_seconds = run_seconds = 0.0
        for index in range(args.rounds):
            count = args.runs // args.rounds + (1 if index < args.runs % args.rounds else 0)
            noop_seconds += _measure_noop(connection, args, count)
            run_seconds += _measure_runs(app, connection, args, count, org_id, workflow_id, version_id)
        load_after = os.getloadavg()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
        connection.flushdb()
        with _admin(args.server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')

    noop_rate = args.runs / noop_seconds
    run_rate = args.runs / run_seconds
    ratio = run_rate / noop_rate
    result = {
        "runs": args.runs,
        "rounds": args.rounds,
        "workers": args.workers,
        "noop_jobs_per_second": round(noop_rate, 1),
        "workflow_runs_per_second": round(run_rate, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "target_runs_per_second": TARGET_RUNS_PER_SECOND,
        "cpus": os.cpu_count(),
        # The 1-, 5- and 15-minute load averages; the machine may be shared with other work.
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in load_after],
        "async_commit": os.environ.get("WORKFLOW_ASYNC_COMMIT", "true"),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))
    ok = ratio >= TARGET_RATIO and run_rate >= TARGET_RUNS_PER_SECOND
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


def _create_workflow(app):
    from app.auth import service as auth_service
    from app.extensions import db
    from app.orgs.service import personal_org
    from app.workflows import service

    with app.app_context():
        user = auth_service.create_user("bench@example.com", secrets.token_hex(12))
        org = personal_org(user)
        workflow = service.create_workflow(org.id, user.id, DEFINITION)
        db.session.commit()
        return org.id, workflow.id, workflow.current_version_id


def _wait_until(condition, limit, what):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not finish in {limit} seconds")
        time.sleep(0.01)


def _result_ttl(args):
    """Seconds to keep finished jobs: the waits count them, so none may expire during a phase."""
    return int(args.time_limit) + 60


def _enqueue_noops(connection, count, result_ttl):
    from rq import Queue

    queue = Queue(QUEUE, connection=connection)
    # By name: run as `python -m bench.workflows`, this module is __main__ here but not in the workers.
    jobs = [Queue.prepare_data("bench.workflows.noop", result_ttl=result_ttl) for _ in range(count)]
    queue.enqueue_many(jobs)
    return queue


def _warm_up(connection, args):
    """Let each worker import the app and open its connections before anything is timed."""
    queue = _enqueue_noops(connection, args.workers * 20, _result_ttl(args))
    _wait_until(lambda: queue.count == 0 and queue.started_job_registry.count == 0, args.time_limit, "warm-up")
    queue.finished_job_registry.cleanup()


def _measure_noop(connection, args, count):
    from rq import Queue

    queue = Queue(QUEUE, connection=connection)
    finished_before = queue.finished_job_registry.count
    started = time.perf_counter()
    _enqueue_noops(connection, count, _result_ttl(args))
    _wait_until(lambda: queue.finished_job_registry.count - finished_before >= count, args.time_limit, "no-op jobs")
    return time.perf_counter() - started


def _measure_runs(app, connection, args, count, org_id, workflow_id, version_id):
    from rq import Queue

    from app.extensions import db
    from app.timeutil import utcnow
    from app.workflows.jobs import execute_run_job
    from app.workflows.models import WorkflowRun

    with app.app_context():
        now = utcnow()
        rows = [
            {
                "org_id": org_id,
                "workflow_id": workflow_id,
                "version_id": version_id,
                "version_number": 1,
                "status": "queued",
                "trigger_type": "manual",
                "input": {"path": f"data/file-{index}.csv", "size": index, "tool": "bench", "extra": "dropped"},
                "cancel_requested": False,
                "queued_at": now,
                "created_at": now,
            }
            for index in range(count)
        ]
        ids = db.session.scalars(db.insert(WorkflowRun).returning(WorkflowRun.id), rows).all()
        db.session.commit()
        db.session.remove()

    queue = Queue(QUEUE, connection=connection)
    finished_before = queue.finished_job_registry.count
    failed_before = queue.failed_job_registry.count
    started = time.perf_counter()
    queue.enqueue_many([Queue.prepare_data(execute_run_job, (run_id,), result_ttl=_result_ttl(args)) for run_id in ids])

    # The same wait as for the no-op jobs: a run's job finishes after the run's commit. Polling
    # PostgreSQL every 10 ms instead would take CPU from the workers on a small machine.
    def all_finished():
        failed = queue.failed_job_registry.count - failed_before
        if failed:
            raise SystemExit(f"{failed} run jobs failed; see the worker logs")
        return queue.finished_job_registry.count - finished_before >= count

    _wait_until(all_finished, args.time_limit, "workflow runs")
    elapsed = time.perf_counter() - started

    with psycopg.connect(f"{args.server}/{args.database}", autocommit=True) as check:
        counts = dict(check.execute("SELECT status, count(*) FROM workflow_runs GROUP BY status").fetchall())
    if set(counts) != {"succeeded"}:
        raise SystemExit(f"expected only succeeded runs, found {counts}; see the worker logs")
    return elapsed


if __name__ == "__main__":
    sys.exit(main())
