"""Background jobs on RQ: enqueueing after commit, and the workers.

Full mode talks to the Redis server at REDIS_URL and jobs run in `rq worker` processes. The
embedded mode (no REDIS_URL) keeps an in-memory Redis (fakeredis) inside the web process and runs
the same RQ job functions on a worker thread started at the first enqueue.
"""

import functools
import logging
import threading
import time
import uuid

import fakeredis
import redis
from flask import current_app, has_app_context
from rq import Queue, SimpleWorker
from rq.timeouts import TimerDeathPenalty
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

QUEUE_NAMES = ("default", "analysis")
DEFAULT_JOB_TIMEOUT = 3600
# A worker pings a pooled database connection before use only when it sat idle this long or the
# last job failed. A busy worker reuses its connection within milliseconds, so it never pings.
POOL_PING_IDLE_SECONDS = 5.0


class JobQueues:
    """The app's Redis connection and queues, kept on `app.extensions["floyo_queue"]`."""

    def __init__(self, app):
        self.app = app
        self.embedded = not app.config["REDIS_URL"]
        if self.embedded:
            self.server = fakeredis.FakeServer()
            self.connection = fakeredis.FakeRedis(server=self.server)
        else:
            self.connection = redis.Redis.from_url(app.config["REDIS_URL"])
        self.queues = {name: Queue(name, connection=self.connection) for name in QUEUE_NAMES}
        self._worker_thread = None
        self._worker = None
        self._lock = threading.Lock()
        # Objects with start() and stop() that run beside the embedded worker (the workflow scheduler).
        self.embedded_services = []

    def enqueue(self, func, *args, queue="default", job_id=None, timeout=DEFAULT_JOB_TIMEOUT, **kwargs):
        if self.embedded:
            self.start_embedded_worker()
        job = self.queues[queue].enqueue(func, *args, job_id=job_id, job_timeout=timeout, **kwargs)
        logger.info("enqueued job=%s func=%s queue=%s", job.id, job.func_name, queue)
        return job

    def start_embedded_worker(self):
        with self._lock:
            if self._worker_thread is not None and self._worker_thread.is_alive():
                return
            self._worker = EmbeddedWorker(
                list(self.queues.values()), connection=self.connection, name=f"embedded-{uuid.uuid4().hex[:8]}"
            )
            self._worker.app = self.app
            self._worker_thread = threading.Thread(
                target=self._worker.work, kwargs={"logging_level": "WARNING"}, name="floyo-embedded-worker", daemon=True
            )
            self._worker_thread.start()
            for service in self.embedded_services:
                service.start()

    @property
    def worker_started(self):
        return self._worker_thread is not None

    def stop_embedded_worker(self):
        for service in self.embedded_services:
            service.stop()
        if self._worker is not None:
            # Not RQ's request_stop: it is a signal handler that replaces the process's SIGINT and
            # SIGTERM handlers and raises StopRequested in the calling thread when the worker is idle.
            self._worker._stop_requested = True
        if self._worker_thread is not None:
            self._worker_thread.join(timeout=10)
        self._worker_thread = None
        self._worker = None

    def wait_until_idle(self, timeout=30.0):
        """Block until every queue is empty and no job is running; for tests and the CLI."""
        deadline = time.monotonic() + timeout
        idle_checks = 0
        while time.monotonic() < deadline:
            idle_checks = idle_checks + 1 if self._is_idle() else 0
            # Two idle readings in a row: a job that finished may enqueue a follow-up job.
            if idle_checks >= 2:
                return True
            time.sleep(0.05)
        return False

    def _is_idle(self):
        for queue in self.queues.values():
            # RQ moves a dequeued job to the queue's intermediate list before the started registry.
            in_flight = self.connection.llen(queue.intermediate_queue_key)
            if queue.count or in_flight or queue.started_job_registry.count:
                return False
        # A worker of several queues pops a job with BLPOP, which uses no intermediate list. The job
        # reaches the started registry only later, and until then its status is still "queued".
        for key in self.connection.scan_iter(match="rq:job:*", count=1000):
            if key.count(b":") == 2 and self.connection.hget(key, "status") == b"queued":
                return False
        return True


def get_queues(app=None):
    return (app or current_app).extensions["floyo_queue"]


def init_app(app):
    app.extensions["floyo_queue"] = JobQueues(app)


def enqueue(func, *args, **kwargs):
    """Enqueue a job now. Prefer `enqueue_after_commit` when the job reads rows being written."""
    return get_queues().enqueue(func, *args, **kwargs)


def enqueue_after_commit(func, *args, **kwargs):
    """Enqueue a job once the current database transaction commits; drop it on rollback.

    A worker can pick a job up within milliseconds, before an uncommitted row would be visible to
    it, so jobs that read what the request wrote wait for the commit.
    """
    from app.extensions import db

    session = db.session()
    session.info.setdefault("floyo_pending_jobs", []).append((get_queues(), None, func, args, kwargs))


def enqueue_once_after_commit(flag_key, flag_seconds, func, *args, **kwargs):
    """Enqueue a job after the commit unless the Redis key `flag_key` exists; set it for `flag_seconds`.

    The job deletes the flag when it starts and then reads what is pending. The flag is tested
    after the commit: tested before, a transaction could see the flag of a job that then starts,
    reads and finishes before this transaction's rows are visible, leaving them unread.
    """
    from app.extensions import db

    session = db.session()
    flag = (flag_key, flag_seconds)
    session.info.setdefault("floyo_pending_jobs", []).append((get_queues(), flag, func, args, kwargs))


@event.listens_for(Session, "after_commit")
def _enqueue_pending_jobs(session):
    # SQLAlchemy also fires after_commit when a SAVEPOINT (begin_nested) is released; the rows
    # become visible to workers only when the outermost transaction commits.
    if session.in_nested_transaction():
        return
    pending = session.info.pop("floyo_pending_jobs", [])
    for queues, flag, func, args, kwargs in pending:
        try:
            if flag is not None and not queues.connection.set(flag[0], 1, nx=True, ex=flag[1]):
                continue
            queues.enqueue(func, *args, **kwargs)
        except redis.RedisError:
            # The rows are committed; the job can be run again by hand (`flask floyo analyze`).
            logger.exception("enqueue failed after commit func=%s args=%s", getattr(func, "__name__", func), args)


@event.listens_for(Session, "after_rollback")
def _drop_pending_jobs(session):
    # A SAVEPOINT rolled back undoes only its own part; the outer transaction may still commit.
    if session.in_nested_transaction():
        return
    session.info.pop("floyo_pending_jobs", None)


_worker_app = None
_worker_app_lock = threading.Lock()


def _app_for_worker():
    """The app a job runs in when it was started outside one (a plain `rq worker` process)."""
    global _worker_app
    with _worker_app_lock:
        if _worker_app is None:
            from app import create_app
            from app.extensions import db

            # These options replace SQLALCHEMY_ENGINE_OPTIONS, which sets only pool_pre_ping.
            # The pool's own pre-ping costs two round trips per job, so _ping_idle_connections
            # pings only where a dropped connection is likely.
            _worker_app = create_app({"SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": False}})
            with _worker_app.app_context():
                _ping_idle_connections(db.engine)
        return _worker_app


_ping_next_checkout = False


def _ping_idle_connections(engine):
    """Ping a pooled connection at checkout when it was idle for a while or the last job failed.

    A failed ping raises DisconnectionError, on which the pool discards the connection and
    checks out another one.
    """

    @event.listens_for(engine, "checkin")
    def remember_checkin(dbapi_connection, record):
        record.info["floyo_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_needed(dbapi_connection, record, proxy):
        global _ping_next_checkout
        checked_in = record.info.get("floyo_checked_in")
        if checked_in is None:
            return  # a new connection
        if not _ping_next_checkout and time.monotonic() - checked_in < POOL_PING_IDLE_SECONDS:
            return
        _ping_next_checkout = False
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            logger.warning("database connection failed its ping; reconnecting: %s", error)
            raise DisconnectionError() from error


def job(func):
    """Run a job function inside an app context, creating the app once per worker process.

    The database session is removed afterwards so that one job's failed transaction never leaks
    into the next job run by the same worker.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if has_app_context():
            return _run_job(func, args, kwargs)
        with _app_for_worker().app_context():
            return _run_job(func, args, kwargs)

    return wrapper


def _run_job(func, args, kwargs):
    global _ping_next_checkout
    from app.extensions import db

    try:
        return func(*args, **kwargs)
    except BaseException:
        _ping_next_checkout = True
        raise
    finally:
        db.session.remove()


class FloyoWorker(SimpleWorker):
    """An RQ worker that runs jobs in the Floyo app's context without forking for each job.

    Start it with `rq worker -w app.queue.FloyoWorker --url $REDIS_URL default analysis`.
    """

    app = None

    def execute_job(self, job, queue):
        from app.monitoring.metrics import record_job_run

        app = self.app or _app_for_worker()
        with app.app_context():
            started = time.monotonic()
            try:
                return super().execute_job(job, queue)
            finally:
                record_job_run(job, queue.name, time.monotonic() - started)


class EmbeddedWorker(FloyoWorker):
    """A worker on a thread of the web process.

    RQ installs signal handlers and enforces job timeouts with SIGALRM, and both only work in a
    process's main thread; this worker leaves the handlers out and times jobs with a timer thread.
    """

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """Wait for a job in steps of a second, so that a stop request ends an idle worker promptly.

        RQ checks its stop flag only between jobs; returning None makes its work loop end.
        """
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(1, max_idle_time=1)
            if result is not None:
                return result
        return None
