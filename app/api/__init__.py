"""The JSON API under /api/v1: key authentication, the error envelope, pagination, OpenAPI."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from app.api import openapi  # noqa: E402,F401  (registers /openapi.json on bp)
