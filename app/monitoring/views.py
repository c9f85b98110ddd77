"""Liveness for load balancers and orchestrators."""

from flask import Blueprint, jsonify

bp = Blueprint("monitoring", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and answering; it checks no dependency."""
    return jsonify({"status": "ok"})
