"""Workflow definitions prepared for the run engine, cached per process by version.

Versions are never updated, so a worker reads and prepares each version's definition once
instead of decoding it and sorting its steps for every run.
"""

import threading

from app.extensions import db
from app.workflows.models import WorkflowVersion

MAX_CACHED_VERSIONS = 1024

_cache = {}
_cache_lock = threading.Lock()


class CompiledDefinition:
    """A definition's steps by id and their execution order.

    The step dicts are shared by every run of the version: the engine and the step handlers read
    them and never change them.
    """

    __slots__ = ("steps", "order")

    def __init__(self, definition):
        self.steps = {step["id"]: step for step in definition["steps"]}
        self.order = topological_order(definition["steps"])


def compiled_definition(version_id, version_created_at):
    """Return the prepared definition of a version, reading it from the database on a cache miss.

    The key includes the version's creation time because a version id alone can name another
    definition in a recreated database (a restored backup, tests that restart the id sequences),
    while this process lives on.
    """
    key = (version_id, version_created_at)
    found = _cache.get(key)
    if found is not None:
        return found
    definition = db.session.scalar(db.select(WorkflowVersion.definition).where(WorkflowVersion.id == version_id))
    compiled = CompiledDefinition(definition)
    with _cache_lock:
        if len(_cache) >= MAX_CACHED_VERSIONS:
            _cache.clear()
        _cache[key] = compiled
    return compiled


def topological_order(steps):
    """Step ids in an order where each step follows its dependencies; ties keep definition order."""
    remaining = {step["id"]: set(step.get("depends_on") or []) for step in steps}
    order = []
    while remaining:
        ready = [step["id"] for step in steps if step["id"] in remaining and not remaining[step["id"]]]
        if not ready:
            raise ValueError("the steps form a cycle")
        for step_id in ready:
            del remaining[step_id]
            order.append(step_id)
        for dependencies in remaining.values():
            dependencies.difference_update(ready)
    return order
