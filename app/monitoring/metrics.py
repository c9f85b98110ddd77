"""Request and job metrics kept in Redis, and their Prometheus exposition.

Why Redis and not prometheus_client's multiprocess mode: gunicorn runs several web processes and
the rq workers are other processes, often on other hosts or containers. Multiprocess mode only
sums processes that share one PROMETHEUS_MULTIPROC_DIR on one host and needs that directory
cleaned between deploys. Counters in Redis are shared by every process that reaches it, survive
restarts, and cost one pipelined round trip per request or job. prometheus_client still renders
the text format, from a custom collector that reads Redis at scrape time.

Gauges that describe current state (queue lengths, webhook deliveries by status, events stored)
are computed at scrape time from RQ and the database, so they are right whichever process serves the scrape.
"""

import ipaddress
import logging
import time
from collections import defaultdict

import redis
import sqlalchemy as sa
from flask import g, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from app.queue import QUEUE_NAMES, get_queues

logger = logging.getLogger(__name__)

HTTP_KEY = "floyo:metrics:http"
JOBS_KEY = "floyo:metrics:jobs"
# Per-minute totals for the monitoring page's request rates; each hash expires after two hours.
MINUTE_KEY = "floyo:metrics:minute:{}"
MINUTE_TTL_SECONDS = 2 * 3600
# Bucket upper bounds in seconds; the request buckets are prometheus_client's defaults. Each observation
# is counted in its own bucket, and the cumulative counts that Prometheus expects are summed at scrape time.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_SEPARATOR = "\x1f"
_ERROR_LOG_INTERVAL_SECONDS = 60
_last_error_logged = 0.0


def init_app(app):
    """Time every request and count it by route, method and status; check METRICS_ALLOWED_ADDRESSES."""
    app.extensions["floyo_metrics_networks"] = parse_networks(app.config["METRICS_ALLOWED_ADDRESSES"])

    @app.before_request
    def start_request_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            observe_request(request.method, route, response.status_code, time.perf_counter() - started)
        return response


def parse_networks(setting):
    """Parse a comma-separated list of addresses or networks, raising RuntimeError on an invalid one."""
    networks = []
    for item in setting.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as error:
            raise RuntimeError(
                f"Setting METRICS_ALLOWED_ADDRESSES has an invalid address or network: {error}"
            ) from None
    return networks


def observe_request(method, route, status, seconds):
    """Add one request to the counters; a Redis error loses the observation and is logged."""
    labels = _SEPARATOR.join((method, route))
    minute = MINUTE_KEY.format(int(time.time() // 60))
    try:
        pipeline = get_queues().connection.pipeline(transaction=False)
        pipeline.hincrby(HTTP_KEY, f"c{_SEPARATOR}{labels}{_SEPARATOR}{status}", 1)
        pipeline.hincrbyfloat(HTTP_KEY, f"s{_SEPARATOR}{labels}", seconds)
        pipeline.hincrby(HTTP_KEY, f"b{_SEPARATOR}{labels}{_SEPARATOR}{_bucket(seconds, REQUEST_BUCKETS)}", 1)
        pipeline.hincrby(minute, "requests", 1)
        pipeline.hincrbyfloat(minute, "seconds", seconds)
        if status >= 500:
            pipeline.hincrby(minute, "errors", 1)
        pipeline.expire(minute, MINUTE_TTL_SECONDS)
        pipeline.execute()
    except redis.RedisError as error:
        _log_redis_error(error)


def observe_job(queue_name, function, status, seconds):
    """Add one finished job run (status "finished" or "failed") to the job counters."""
    labels = _SEPARATOR.join((queue_name, function or "unknown"))
    try:
        pipeline = get_queues().connection.pipeline(transaction=False)
        pipeline.hincrby(JOBS_KEY, f"c{_SEPARATOR}{labels}{_SEPARATOR}{status}", 1)
        pipeline.hincrbyfloat(JOBS_KEY, f"s{_SEPARATOR}{labels}", seconds)
        pipeline.hincrby(JOBS_KEY, f"b{_SEPARATOR}{labels}{_SEPARATOR}{_bucket(seconds, JOB_BUCKETS)}", 1)
        pipeline.execute()
    except redis.RedisError as error:
        _log_redis_error(error)


def record_job_run(job, queue_name, seconds):
    """Count a job that a worker has just run, from the status RQ set on it."""
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    observe_job(queue_name, job.func_name, "failed" if status == "failed" else "finished", seconds)


def _bucket(seconds, buckets):
    for index, bound in enumerate(buckets):
        if seconds <= bound:
            return index
    return len(buckets)


def render_latest():
    """Return the Prometheus text exposition of every Floyo metric."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FloyoCollector())
    return generate_latest(registry)


class FloyoCollector:
    """Build the metric families from Redis, RQ and the database at scrape time."""

    def collect(self):
        connection = get_queues().connection
        yield from _http_families(_read_hash(connection, HTTP_KEY))
        yield from _job_families(_read_hash(connection, JOBS_KEY))
        yield from _queue_families()
        yield from _database_families()


def _read_hash(connection, key):
    return {field.decode(): value.decode() for field, value in connection.hgetall(key).items()}


def _split(values):
    """Split the hash's fields into counts {labels+status: n}, sums {labels: s} and buckets {labels: [n...]}."""
    counts, sums, buckets = {}, {}, defaultdict(dict)
    for field, value in values.items():
        kind, _, rest = field.partition(_SEPARATOR)
        if kind == "c":
            counts[tuple(rest.split(_SEPARATOR))] = int(value)
        elif kind == "s":
            sums[tuple(rest.split(_SEPARATOR))] = float(value)
        elif kind == "b":
            *labels, index = rest.split(_SEPARATOR)
            buckets[tuple(labels)][int(index)] = int(value)
    return counts, sums, buckets


def _histogram(name, documentation, label_names, sums, buckets, bounds):
    family = HistogramMetricFamily(name, documentation, labels=label_names)
    for labels, counts in buckets.items():
        cumulative, total = [], 0
        for index, bound in enumerate(bounds):
            total += counts.get(index, 0)
            cumulative.append((repr(bound), total))
        total += counts.get(len(bounds), 0)
        cumulative.append(("+Inf", total))
        family.add_metric(list(labels), cumulative, sums.get(labels, 0.0))
    return family


def _http_families(values):
    counts, sums, buckets = _split(values)
    requests = CounterMetricFamily(
        "floyo_http_requests",
        "HTTP requests answered, by method, route and status.",
        labels=["method", "route", "status"],
    )
    for labels, value in counts.items():
        requests.add_metric(list(labels), value)
    yield requests
    yield _histogram(
        "floyo_http_request_duration_seconds",
        "Time to answer an HTTP request, by method and route.",
        ["method", "route"],
        sums,
        buckets,
        REQUEST_BUCKETS,
    )


def _job_families(values):
    counts, sums, buckets = _split(values)
    runs = CounterMetricFamily(
        "floyo_job_runs", "Background jobs run, by queue, function and outcome.", labels=["queue", "function", "status"]
    )
    for labels, value in counts.items():
        runs.add_metric(list(labels), value)
    yield runs
    yield _histogram(
        "floyo_job_duration_seconds",
        "Time a background job ran, by queue and function.",
        ["queue", "function"],
        sums,
        buckets,
        JOB_BUCKETS,
    )


def _queue_families():
    jobs = GaugeMetricFamily("floyo_queue_jobs", "Jobs per RQ queue and state.", labels=["queue", "state"])
    for name in QUEUE_NAMES:
        queue = get_queues().queues[name]
        jobs.add_metric([name, "queued"], queue.count)
        jobs.add_metric([name, "started"], queue.started_job_registry.count)
        jobs.add_metric([name, "failed"], queue.failed_job_registry.count)
        jobs.add_metric([name, "scheduled"], queue.scheduled_job_registry.count)
        jobs.add_metric([name, "deferred"], queue.deferred_job_registry.count)
    yield jobs
    from rq import Worker

    workers = GaugeMetricFamily("floyo_rq_workers", "RQ workers registered in Redis.")
    workers.add_metric([], Worker.count(connection=get_queues().connection))
    yield workers


def _database_families():
    from app.extensions import db

    # Every stored event takes the next id, so the highest id counts the events ingested and an
    # index lookup reads it. NOTE: PostgreSQL also spends an id on each resend dropped as a duplicate,
    # so this overcounts by the duplicates. Deleting the newest events lowers it, which reads as a reset.
    highest_id = db.session.scalar(sa.text("SELECT MAX(id) FROM events"))
    events = CounterMetricFamily("floyo_events_ingested", "Usage events stored, over all organizations.")
    events.add_metric([], int(highest_id or 0))
    yield events

    inspector = sa.inspect(db.engine)
    if inspector.has_table("webhook_deliveries"):
        rows = db.session.execute(
            sa.text("SELECT provider, status, COUNT(*) FROM webhook_deliveries GROUP BY provider, status")
        ).all()
        incoming = GaugeMetricFamily(
            "floyo_webhook_deliveries",
            "Stored incoming webhook deliveries by provider and status.",
            labels=["provider", "status"],
        )
        for provider, status, count in rows:
            incoming.add_metric([provider, status], count)
        yield incoming
    if inspector.has_table("outgoing_deliveries"):
        rows = db.session.execute(sa.text("SELECT status, COUNT(*) FROM outgoing_deliveries GROUP BY status")).all()
        outgoing = GaugeMetricFamily(
            "floyo_outgoing_webhook_deliveries", "Outgoing webhook deliveries by status.", labels=["status"]
        )
        for status, count in rows:
            outgoing.add_metric([status], count)
        yield outgoing


def request_rates(minutes=60):
    """Return per-minute request counts, mean latency and 5xx errors for the last `minutes`, oldest first."""
    connection = get_queues().connection
    now_minute = int(time.time() // 60)
    minute_numbers = range(now_minute - minutes + 1, now_minute + 1)
    pipeline = connection.pipeline(transaction=False)
    for number in minute_numbers:
        pipeline.hgetall(MINUTE_KEY.format(number))
    rows = []
    for number, values in zip(minute_numbers, pipeline.execute(), strict=True):
        count = int(values.get(b"requests", 0))
        seconds = float(values.get(b"seconds", 0))
        rows.append(
            {
                "minute": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(number * 60)),
                "requests": count,
                "errors": int(values.get(b"errors", 0)),
                "mean_seconds": round(seconds / count, 4) if count else None,
            }
        )
    return rows


def route_summary(limit=20):
    """Return the busiest routes with their request counts, 5xx counts and mean latency since counting began."""
    counts, sums, _ = _split(_read_hash(get_queues().connection, HTTP_KEY))
    routes = defaultdict(lambda: {"requests": 0, "errors": 0})
    for (method, route, status), value in counts.items():
        entry = routes[(method, route)]
        entry["requests"] += value
        if int(status) >= 500:
            entry["errors"] += value
    rows = [
        {
            "method": method,
            "route": route,
            "requests": entry["requests"],
            "errors": entry["errors"],
            "mean_seconds": round(sums.get((method, route), 0.0) / entry["requests"], 4) if entry["requests"] else None,
        }
        for (method, route), entry in routes.items()
    ]
    rows.sort(key=lambda row: row["requests"], reverse=True)
    return rows[:limit]


def _log_redis_error(error):
    global _last_error_logged
    now = time.monotonic()
    if now - _last_error_logged >= _ERROR_LOG_INTERVAL_SECONDS:
        _last_error_logged = now
        logger.warning("metrics not recorded, Redis failed: %s", error)
