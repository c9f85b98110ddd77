"""Liveness and readiness for load balancers, /metrics for Prometheus, and the monitoring page for site admins."""

import hmac
import ipaddress

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from app.admin.access import admin_api_required, admin_required
from app.api import bp as api_bp
from app.api.openapi import operation
from app.monitoring import metrics, service

bp = Blueprint("monitoring", __name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@bp.get("/healthz")
def healthz():
    """The process is up and answering; it checks no dependency."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Check the database, Redis and that the migrations are at head: 200 when all pass, else 503 naming what failed."""
    ready, checks = service.readiness()
    return jsonify({"status": "ok" if ready else "unavailable", "checks": checks}), 200 if ready else 503


@bp.get("/metrics")
def prometheus_metrics():
    """Expose the metrics in Prometheus text format, to a bearer METRICS_TOKEN or an allowed address."""
    from app import error_response

    if not _metrics_allowed():
        return error_response(
            403,
            "forbidden",
            "Send 'Authorization: Bearer' with METRICS_TOKEN, or scrape from an address in METRICS_ALLOWED_ADDRESSES.",
        )
    return Response(metrics.render_latest(), content_type=PROMETHEUS_CONTENT_TYPE)


@bp.get("/admin/monitoring")
@admin_required
def page():
    """Show request rates and latencies, Redis and the database to site admins."""
    return render_template(
        "monitoring/index.html",
        rates=metrics.request_rates(),
        routes=metrics.route_summary(),
        cache=service.cache_info(),
        database=service.database_info(),
        ready=service.readiness(),
    )


@api_bp.get("/monitoring/metrics")
@operation("Request rates per minute and the busiest routes (site admins only)", tag="monitoring")
@admin_api_required
def api_metrics():
    """Return per-minute request counts for the last hour and the busiest routes with their mean latency."""
    return jsonify({"per_minute": metrics.request_rates(), "routes": metrics.route_summary()})


@api_bp.get("/monitoring/cache")
@operation("Redis memory, keys, hit rate and rate-limit counters (site admins only)", tag="monitoring")
@admin_api_required
def api_cache():
    """Return what Redis reports about itself, and the rate-limit counters of the current windows."""
    return jsonify(service.cache_info())


@api_bp.get("/monitoring/database")
@operation("Database connections, table and index sizes, slow queries (site admins only)", tag="monitoring")
@admin_api_required
def api_database():
    """Return connections in use, the largest tables and indexes, and the slowest queries where recorded."""
    return jsonify(service.database_info())


def _metrics_allowed():
    token = current_app.config["METRICS_TOKEN"]
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token.encode()):
        return True
    # NOTE: behind a reverse proxy remote_addr is the proxy's address; allow it or use the token.
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in current_app.extensions["floyo_metrics_networks"])
