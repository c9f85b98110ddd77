"""The workflow definition format, validated with pydantic, and the graph checks on its steps.

`validate_definition` is the one gate: pages, the API, imports and suggestion drafts all pass
through it, and every problem comes back as {field, message} with the step it concerns.
"""

import re
import zoneinfo
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from app.errors import ValidationError
from app.events.models import EVENT_TYPES
from app.workflows.expressions import ExpressionError, expression_references, parse_expression, template_references

STEP_TYPES = ("http_request", "transform", "condition", "delay", "notify", "webhook", "file", "record_event")
# Steps whose effect leaves the system; a recovery never repeats an attempt of these that may have been sent.
SENDING_STEP_TYPES = ("http_request", "webhook", "notify")
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_STEPS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ManualTrigger(_Strict):
    type: Literal["manual"]


class ScheduleTrigger(_Strict):
    type: Literal["schedule"]
    cron: str = Field(description="Five cron fields: minute hour day-of-month month day-of-week.")
    timezone: str = Field("UTC", description="IANA time zone name, such as Europe/Berlin.")

    @field_validator("cron")
    @classmethod
    def check_cron(cls, value):
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a five-field cron expression such as '0 9 * * 1-5'")
        return value

    @field_validator("timezone")
    @classmethod
    def check_timezone(cls, value):
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"{value!r} is not an IANA time zone name such as 'Europe/Berlin'") from error
        return value


class WebhookTrigger(_Strict):
    type: Literal["webhook"]
    # Also start on deliveries of this configured provider (POST /api/v1/webhooks/<provider>).
    provider: str | None = Field(None, max_length=64, exclude_if=lambda value: value is None)


class EventMatchTrigger(_Strict):
    type: Literal["event_match"]
    event_type: Literal[EVENT_TYPES]
    path_glob: str = Field("*", min_length=1, max_length=1024)


Trigger = Annotated[ManualTrigger | ScheduleTrigger | WebhookTrigger | EventMatchTrigger, Field(discriminator="type")]


class HttpRequestConfig(_Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str | None = Field(None, max_length=2048)
    integration: str | None = Field(None, description="A generic HTTP integration; `url` may then be a path.")
    headers: dict[str, str] = {}
    query: dict[str, Any] = {}
    body: Any = None
    expect_status: list[int] | None = Field(None, description="Statuses that count as success; default 200-399.")


class TransformConfig(_Strict):
    input: Any = "{{ trigger }}"
    operations: list[dict[str, Any]] = []


class ConditionConfig(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    if_: str = Field(alias="if", description="An expression, such as trigger.size > 1000.")
    then: list[str] = []
    else_: list[str] = Field([], alias="else")


class DelayConfig(_Strict):
    seconds: float | None = Field(None, ge=0, le=30 * 24 * 3600)
    until: str | None = Field(None, description="An ISO 8601 time with an offset, or a template giving one.")


class NotifyConfig(_Strict):
    channel: Literal["email", "slack"]
    to: str | list[str] | None = None
    subject: str = ""
    body: str = ""
    integration: str | None = None


class WebhookConfig(_Strict):
    integration: str = Field(description="A generic HTTP integration with a signing secret.")
    url: str | None = Field(None, max_length=2048)
    payload: Any = None
    headers: dict[str, str] = {}


class FileConfig(_Strict):
    action: Literal["write", "copy", "zip"]
    path: str | None = None
    content: Any = None
    source: str | None = None
    sources: list[str] = []
    destination: str | None = None


class RecordEventConfig(_Strict):
    type: Literal[EVENT_TYPES]
    path: str = Field(min_length=1, max_length=1024)
    tool: str = ""
    metadata: dict[str, Any] = {}


CONFIG_MODELS = {
    "http_request": HttpRequestConfig,
    "transform": TransformConfig,
    "condition": ConditionConfig,
    "delay": DelayConfig,
    "notify": NotifyConfig,
    "webhook": WebhookConfig,
    "file": FileConfig,
    "record_event": RecordEventConfig,
}
TRANSFORM_OPERATIONS = ("pick", "rename", "map", "filter")


class Step(_Strict):
    id: str
    type: Literal[STEP_TYPES]
    name: str = ""
    depends_on: list[str] = []
    config: dict[str, Any] = {}
    timeout_seconds: float = Field(30, gt=0, le=3600)
    retries: int = Field(0, ge=0, le=10)
    retry_backoff_seconds: float = Field(
        1, ge=0, le=3600, description="Wait before the first retry; doubles each time."
    )
    on_failure: Literal["stop", "continue"] = "stop"

    @field_validator("id")
    @classmethod
    def check_id(cls, value):
        if not STEP_ID.match(value):
            raise ValueError(f"{value!r} is not a step id; use 1-64 letters, digits, '_' or '-'")
        return value


class Definition(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    trigger: Trigger
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)


class _Problems:
    def __init__(self):
        self.items = []

    def add(self, field, message):
        self.items.append({"field": field, "message": message})


def _field_name(location, steps):
    """Turn ("steps", 1, "config", "url") into "steps[1] (fetch).config.url"."""
    name = ""
    for index, part in enumerate(location):
        if isinstance(part, int):
            name += f"[{part}]"
            if index == 1 and location[0] == "steps" and part < len(steps) and isinstance(steps[part], dict):
                step_id = steps[part].get("id")
                if isinstance(step_id, str):
                    name += f" ({step_id})"
        else:
            name += ("." if name else "") + str(part)
    return name or "definition"


def _message(item, value):
    location = item["loc"]
    if item["type"] == "missing" and location == ("trigger",):
        return 'a trigger is required, e.g. {"type": "manual"}'
    if item["type"] == "missing":
        return "is required"
    if location[-1:] == ("type",) and location[:1] == ("steps",) and item["type"] == "literal_error":
        return f"unknown step type {item.get('input')!r}; use one of {', '.join(STEP_TYPES)}"
    if location[:2] == ("trigger", "type") or item["type"] == "union_tag_invalid":
        return "unknown trigger type; use one of manual, schedule, webhook, event_match"
    if item["type"] == "extra_forbidden":
        return "is not a known field"
    message = item["msg"]
    return message.removeprefix("Value error, ")


def validate_definition(data):
    """Validate a definition document and return it normalized, or raise a 422 ValidationError.

    The error's details list every problem as {field, message}; a step's field names its index and id.
    """
    problems = _Problems()
    if not isinstance(data, dict):
        raise ValidationError(
            "The workflow definition must be a JSON object with name, trigger and steps.",
            [{"field": "definition", "message": "must be a JSON object"}],
        )
    raw_steps = data.get("steps") if isinstance(data.get("steps"), list) else []
    try:
        definition = Definition.model_validate(data)
    except PydanticValidationError as error:
        for item in error.errors(include_url=False):
            problems.add(_field_name(item["loc"], raw_steps), _message(item, data))
        raise _invalid(problems) from None

    _check_steps(definition.steps, problems)
    if problems.items:
        raise _invalid(problems)
    document = definition.model_dump(mode="json")
    for step, normalized in zip(definition.steps, document["steps"], strict=True):
        normalized["config"] = step.config
    return document


def _invalid(problems):
    first = problems.items[0]
    count = len(problems.items)
    more = f" ({count - 1} more problem{'s' if count > 2 else ''} listed in details)" if count > 1 else ""
    return ValidationError(
        f"The workflow definition is invalid: {first['field']}: {first['message']}{more}.", problems.items
    )


def _check_steps(steps, problems):
    ids = {}
    for index, step in enumerate(steps):
        if step.id in ids:
            problems.add(f"steps[{index}] ({step.id}).id", f"duplicate step id {step.id!r}; ids must be unique")
        ids.setdefault(step.id, index)

    for index, step in enumerate(steps):
        where = f"steps[{index}] ({step.id})"
        for dependency in step.depends_on:
            if dependency == step.id:
                problems.add(f"{where}.depends_on", f"step {step.id!r} depends on itself")
            elif dependency not in ids:
                problems.add(
                    f"{where}.depends_on",
                    f"step {step.id!r} depends on unknown step {dependency!r}; no step has that id",
                )
    if problems.items:
        return

    cycle = find_cycle(steps)
    if cycle:
        index = ids[cycle[0]]
        path = " → ".join(cycle + [cycle[0]])
        problems.add(
            f"steps[{index}] ({cycle[0]}).depends_on",
            f"the steps form a cycle: {path} (each arrow reads 'depends on'); remove one dependency",
        )
        return

    ancestors = ancestor_map(steps)
    for index, step in enumerate(steps):
        where = f"steps[{index}] ({step.id})"
        _check_config(step, where, problems)
        _check_references(step, where, ancestors, problems)
        if step.type == "condition" and not any(p["field"].startswith(where) for p in problems.items):
            _check_branches(step, steps, where, problems)


def find_cycle(steps):
    """Return the step ids of one dependency cycle, or an empty list."""
    graph = {step.id: list(step.depends_on) for step in steps}
    state = {}
    trail = []

    def visit(node):
        state[node] = "visiting"
        trail.append(node)
        for dependency in graph[node]:
            if state.get(dependency) == "visiting":
                return trail[trail.index(dependency) :]
            if dependency not in state:
                found = visit(dependency)
                if found:
                    return found
        trail.pop()
        state[node] = "done"
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def ancestor_map(steps):
    """Map each step id to the set of ids it depends on, directly or through other steps."""
    direct = {step.id: set(step.depends_on) for step in steps}
    result = {}

    def collect(node):
        if node not in result:
            found = set()
            for dependency in direct[node]:
                found.add(dependency)
                found |= collect(dependency)
            result[node] = found
        return result[node]

    for step in steps:
        collect(step.id)
    return result


def _check_config(step, where, problems):
    model = CONFIG_MODELS[step.type]
    try:
        config = model.model_validate(step.config)
    except PydanticValidationError as error:
        for item in error.errors(include_url=False):
            field = ".".join(str(part) for part in item["loc"])
            problems.add(f"{where}.config{'.' + field if field else ''}", _message(item, step.config))
        return
    if step.type == "transform":
        for number, operation in enumerate(config.operations):
            _check_operation(operation, f"{where}.config.operations[{number}]", problems)
    elif step.type == "condition":
        try:
            parse_expression(config.if_)
        except ExpressionError as error:
            problems.add(f"{where}.config.if", str(error))
    elif step.type == "http_request" and not config.url and not config.integration:
        problems.add(f"{where}.config.url", "is required unless an integration gives the base URL")
    elif step.type == "delay" and (config.seconds is None) == (config.until is None):
        problems.add(f"{where}.config", "give exactly one of seconds or until")
    elif step.type == "notify":
        if config.channel == "email" and not config.to:
            problems.add(f"{where}.config.to", "is required for email; give an address or a list of addresses")
        if config.channel == "slack" and not config.integration:
            problems.add(f"{where}.config.integration", "is required for slack; name a Slack integration")
    elif step.type == "file":
        needed = {"write": ("path",), "copy": ("source", "destination"), "zip": ("sources", "destination")}
        for name in needed[config.action]:
            if not getattr(config, name):
                problems.add(f"{where}.config.{name}", f"is required for the {config.action} action")


def _check_operation(operation, where, problems):
    if len(operation) != 1 or next(iter(operation)) not in TRANSFORM_OPERATIONS:
        problems.add(where, f"an operation is one object with one key of {', '.join(TRANSFORM_OPERATIONS)}")
        return
    name, argument = next(iter(operation.items()))
    if name == "pick" and not (isinstance(argument, list) and all(isinstance(item, str) for item in argument)):
        problems.add(f"{where}.pick", "must be a list of field names")
    elif name == "rename" and not (
        isinstance(argument, dict) and all(isinstance(item, str) for item in argument.values())
    ):
        problems.add(f"{where}.rename", "must map old field names to new ones")
    elif name == "map":
        if not isinstance(argument, dict):
            problems.add(f"{where}.map", "must map field names to templates such as '{{ item.name }}'")
    elif name == "filter":
        try:
            parse_expression(argument)
        except ExpressionError as error:
            problems.add(f"{where}.filter", str(error))


def _check_references(step, where, ancestors, problems):
    references = []
    try:
        references.extend(template_references(step.config))
        if step.type == "condition" and isinstance(step.config.get("if"), str):
            references.extend(expression_references(parse_expression(step.config["if"])))
        if step.type == "transform":
            for operation in step.config.get("operations") or []:
                if isinstance(operation, dict) and isinstance(operation.get("filter"), str):
                    references.extend(expression_references(parse_expression(operation["filter"])))
    except ExpressionError as error:
        problems.add(f"{where}.config", str(error))
        return
    for parts in references:
        if parts[0] == "steps" and parts[1] not in ancestors[step.id]:
            problems.add(
                f"{where}.config",
                f"refers to steps.{parts[1]} but step {step.id!r} does not depend on it; add it to depends_on",
            )
        if parts[0] == "item" and step.type != "transform":
            problems.add(f"{where}.config", "item.* is only available in transform map and filter operations")


def _check_branches(step, steps, where, problems):
    by_id = {other.id: other for other in steps}
    for key in ("then", "else"):
        for target in step.config.get(key) or []:
            if target not in by_id:
                problems.add(f"{where}.config.{key}", f"names unknown step {target!r}")
            elif step.id not in by_id[target].depends_on:
                problems.add(
                    f"{where}.config.{key}",
                    f"step {target!r} is on this branch, so it must list {step.id!r} in depends_on",
                )
