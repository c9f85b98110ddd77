"""The record_event step: add a usage event to the organization."""

from app.timeutil import utcnow


def _failed(message):
    from app.workflows.steps import StepFailed

    return StepFailed(message)


def run_record_event(context):
    from app.errors import ServiceError
    from app.events import service as events_service

    config = context.config
    # The run id in the metadata keeps event-match triggers from starting workflows on events that
    # workflows recorded themselves, which could loop for ever.
    metadata = {**(config.get("metadata") or {}), "workflow_run_id": context.run_id}
    event = {
        "type": config["type"],
        "path": str(config["path"]),
        "tool": str(config.get("tool") or "floyo"),
        "occurred_at": utcnow(),
        "event_id": f"workflow-run-{context.run_id}-{context.step['id']}",
        "metadata": metadata,
    }
    try:
        result = events_service.insert_events(context.org_id, context.user_id, "api", [event])
    except ServiceError as error:
        raise _failed(f"the event was rejected: {error.message}") from None
    context.log(f"recorded {config['type']} {event['path']}")
    [(status, stored_id)] = result
    output = {key: event[key] for key in ("type", "path", "tool", "event_id")}
    return {"event": output, "status": status, "id": stored_id}
