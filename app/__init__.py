"""Floyo: learns how people work with files and tools, and turns it into automations."""

import logging
import os
import re
import uuid
from pathlib import Path

from flask import Flask, g, jsonify, render_template, request
from htmx_flask import Htmx
from werkzeug.exceptions import HTTPException

from app import queue, ratelimit, security
from app.config import BASE_DIR, load_config
from app.extensions import csrf, db, login_manager, migrate
from app.logs import configure_logging

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(config=None):
    """Build the app from the environment, with `config` overriding settings (tests use it)."""
    instance_path = Path(
        (config or {}).get("INSTANCE_PATH") or os.environ.get("INSTANCE_PATH") or BASE_DIR / "instance"
    )
    app = Flask(
        __name__,
        instance_path=str(instance_path),
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
    )
    app.config.update(load_config(instance_path))
    if config:
        app.config.update(config)
    instance_path.mkdir(parents=True, exist_ok=True)

    configure_logging(app)
    from app import models  # noqa: F401

    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    Htmx(app)
    queue.init_app(app)
    security.init_app(app)
    _configure_sqlite(app)

    _register_blueprints(app)
    _register_request_hooks(app)
    _register_template_filters(app)
    _register_error_handlers(app)

    from app import cli

    cli.init_app(app)
    return app


def _configure_sqlite(app):
    """WAL and a busy timeout let the embedded worker thread write while pages read."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine

        @event.listens_for(engine, "connect")
        def set_sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()


def _register_blueprints(app):
    # Importing the API modules registers their routes on the API blueprint.
    from app.admin import api as _admin_api  # noqa: F401
    from app.admin.views import bp as admin_bp
    from app.analytics import api as _analytics_api  # noqa: F401
    from app.analytics.views import bp as analytics_bp
    from app.api import bp as api_bp
    from app.audit import api as _audit_api  # noqa: F401
    from app.audit.views import bp as org_audit_bp
    from app.auth import api as _auth_api  # noqa: F401
    from app.auth.views import bp as auth_bp
    from app.billing import api as _billing_api  # noqa: F401
    from app.billing.views import bp as billing_bp
    from app.events import api as _events_api  # noqa: F401
    from app.events.views import bp as events_bp
    from app.files import api as _files_api  # noqa: F401
    from app.files.views import bp as files_bp
    from app.insights import api as _insights_api  # noqa: F401
    from app.insights.views import bp as insights_bp
    from app.integrations import api as _integrations_api  # noqa: F401
    from app.integrations.views import bp as integrations_bp
    from app.monitoring.views import bp as monitoring_bp
    from app.orgs import api as _orgs_api  # noqa: F401
    from app.orgs.views import bp as orgs_bp
    from app.webhooks import api as _webhooks_api  # noqa: F401
    from app.webhooks.views import bp as webhooks_bp
    from app.workflows import api as _workflows_api  # noqa: F401
    from app.workflows import scheduler as workflow_scheduler
    from app.workflows.views import bp as workflows_bp

    app.register_blueprint(admin_bp)
    app.register_blueprint(analytics_bp)
    app.register_blueprint(org_audit_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(billing_bp)
    app.register_blueprint(events_bp)
    app.register_blueprint(files_bp)
    app.register_blueprint(insights_bp)
    app.register_blueprint(monitoring_bp)
    app.register_blueprint(orgs_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(workflows_bp)
    app.register_blueprint(integrations_bp)
    app.register_blueprint(api_bp)
    # API routes authenticate with a bearer key, never a cookie, so CSRF cannot apply to them.
    csrf.exempt(api_bp)
    workflow_scheduler.init_app(app)


def _register_template_filters(app):
    from app.timeutil import isoformat

    @app.template_filter("datetime")
    def format_datetime(value):
        """Show a UTC time as `2025-02-13 09:16 UTC`; the full ISO value is in `isoformat`."""
        if value is None:
            return ""
        return value.strftime("%Y-%m-%d %H:%M UTC")

    app.jinja_env.filters["isoformat"] = isoformat


def _register_request_hooks(app):
    @app.before_request
    def assign_request_id():
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex

    @app.after_request
    def add_standard_headers(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if response.mimetype == "text/html":
            # Pages answer HTMX requests with fragments, so caches must key on the header.
            response.vary.add("HX-Request")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    from app.admin import maintenance
    from app.monitoring import metrics, sentry

    # Registered after the request id: the timer covers the rest of the request, and the 503s of
    # maintenance mode are counted like any other answer.
    metrics.init_app(app)
    maintenance.init_app(app)
    ratelimit.init_app(app)
    sentry.init_app(app)


def wants_json():
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def error_response(status, code, message, details=None, headers=None):
    """Render an error as the JSON envelope for API clients, as a page for browsers."""
    if wants_json():
        body = {"error": {"code": code, "message": message, "details": details}}
        response = jsonify(body)
    else:
        template = f"errors/{status}.html" if status in (400, 403, 404, 413, 429, 500) else "errors/generic.html"
        response = app_render(template, status=status, message=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def app_render(template, **context):
    from flask import make_response

    return make_response(render_template(template, **context))


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def _register_error_handlers(app):
    from flask_wtf.csrf import CSRFError

    from app.errors import RateLimited, ServiceError

    @app.errorhandler(CSRFError)
    def handle_csrf_error(error):
        return error_response(
            400, "csrf_failed", "The form expired or was sent from another site. Reload the page and try again."
        )

    @app.errorhandler(RateLimited)
    def handle_rate_limited(error):
        return error_response(429, error.code, error.message, error.details, {"Retry-After": str(error.retry_after)})

    @app.errorhandler(ServiceError)
    def handle_service_error(error):
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error):
        status = error.code or 500
        message = error.description or error.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"The request body is larger than the limit of {limit} bytes. Send less data per request."
        headers = {}
        if status == 405 and getattr(error, "valid_methods", None):
            headers["Allow"] = ", ".join(error.valid_methods)
        return error_response(status, _HTTP_CODES.get(status, "http_error"), message, headers=headers)

    @app.errorhandler(Exception)
    def handle_unexpected_error(error):
        # Roll back first: the failed transaction must not leak into the rendering or the next request.
        db.session.rollback()
        logger.exception("unhandled error path=%s", request.path)
        return error_response(
            500, "internal_error", "Something went wrong on our side. The error was logged; try again later."
        )
