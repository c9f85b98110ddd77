"""Logging set up once by the factory: every line carries the request id and the ids involved."""

import json
import logging
import sys

from flask import g, has_request_context

CONTEXT_FIELDS = ("request_id", "user_id", "org_id", "job_id")


class ContextFilter(logging.Filter):
    """Copy the ids of the current request or job onto each record."""

    def filter(self, record):
        for field in CONTEXT_FIELDS:
            if not hasattr(record, field):
                setattr(record, field, None)
        if has_request_context():
            record.request_id = g.get("request_id")
            record.user_id = g.get("log_user_id")
            record.org_id = g.get("log_org_id")
        else:
            from rq import get_current_job

            current = get_current_job()
            if current is not None:
                record.job_id = current.id
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record):
        line = f"{self.formatTime(record)} {record.levelname} {record.name}"
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line += f" {field}={value}"
        line += f" {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(app):
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if app.config["LOG_FORMAT"] == "json" else KeyValueFormatter())
    root = logging.getLogger()
    # Replace a handler an earlier app installed (tests build many apps in one process).
    for existing in list(root.handlers):
        if getattr(existing, "floyo", False):
            root.removeHandler(existing)
    handler.floyo = True
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"])
    app.logger.handlers.clear()
    app.logger.propagate = True
