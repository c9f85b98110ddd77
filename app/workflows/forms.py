"""The step editor's form: turning its fields into a definition and applying editor actions.

The editor is one HTML form. Each button names an action (add, remove:N, up:N, down:N, raw,
save); the server rebuilds the definition from the fields, applies the action and renders the
editor again, so it works as a plain form and, with HTMX, swaps only the editor.
"""

import json

from app.workflows.schemas import STEP_TYPES

STEP_TEMPLATES = {
    "http_request": {"method": "GET", "url": "https://example.com/"},
    "transform": {"input": "{{ trigger }}", "operations": [{"pick": ["path"]}]},
    "condition": {"if": "trigger.size > 0", "then": [], "else": []},
    "delay": {"seconds": 60},
    "notify": {"channel": "email", "to": "me@example.com", "subject": "Workflow finished", "body": ""},
    "webhook": {"integration": "my-endpoint", "payload": {"path": "{{ trigger.path }}"}},
    "file": {"action": "write", "path": "reports/output.txt", "content": "{{ trigger }}"},
    "record_event": {"type": "tool_used", "path": "{{ trigger.path }}", "tool": "floyo"},
}
BLANK = {"name": "New workflow", "description": "", "trigger": {"type": "manual"}, "steps": []}


class EditorState:
    """A definition being edited, with the problems found while reading the form."""

    def __init__(self, definition, problems=None):
        self.definition = definition
        self.problems = problems or []

    @property
    def raw(self):
        return json.dumps(self.definition, indent=2, ensure_ascii=False)

    def step_config_text(self, step):
        return json.dumps(step.get("config", {}), indent=2, ensure_ascii=False)

    def errors_for(self, prefix):
        return [item["message"] for item in self.problems if item["field"].startswith(prefix)]


def _number(raw, default, kind=float):
    try:
        return kind(raw)
    except (TypeError, ValueError):
        return default


def read_form(form):
    """Build the definition from the editor's fields; JSON that does not parse becomes a problem."""
    problems = []
    trigger_type = form.get("trigger_type", "manual")
    trigger = {"type": trigger_type}
    if trigger_type == "schedule":
        trigger.update(cron=form.get("trigger_cron", "").strip(), timezone=form.get("trigger_timezone", "UTC").strip())
    elif trigger_type == "event_match":
        trigger.update(event_type=form.get("trigger_event_type", ""), path_glob=form.get("trigger_path_glob", "*"))
    steps = []
    count = _number(form.get("step_count"), 0, int)
    for index in range(min(count, 100)):
        prefix = f"steps-{index}-"
        if f"{prefix}type" not in form:
            continue
        raw_config = form.get(f"{prefix}config", "{}") or "{}"
        try:
            config = json.loads(raw_config)
        except ValueError as error:
            problems.append({"field": f"steps[{index}]", "message": f"config is not valid JSON: {error}"})
            config = {}
        depends_on = [item.strip() for item in form.get(f"{prefix}depends_on", "").split(",") if item.strip()]
        steps.append(
            {
                "id": form.get(f"{prefix}id", "").strip(),
                "type": form.get(f"{prefix}type"),
                "depends_on": depends_on,
                "config": config,
                "timeout_seconds": _number(form.get(f"{prefix}timeout_seconds"), 30),
                "retries": _number(form.get(f"{prefix}retries"), 0, int),
                "retry_backoff_seconds": _number(form.get(f"{prefix}retry_backoff_seconds"), 1),
                "on_failure": form.get(f"{prefix}on_failure", "stop"),
            }
        )
    definition = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip(),
        "trigger": trigger,
        "steps": steps,
    }
    return EditorState(definition, problems)


def apply_action(state, action, form):
    """Apply an editor action (add, remove:N, up:N, down:N, raw) to the state in place."""
    steps = state.definition["steps"]
    name, _, argument = (action or "").partition(":")
    index = _number(argument, -1, int)
    if name == "add":
        step_type = form.get("new_step_type")
        if step_type not in STEP_TYPES:
            state.problems.append({"field": "new_step_type", "message": "choose a step type to add"})
            return
        existing = {step["id"] for step in steps}
        number = len(steps) + 1
        while f"{step_type}_{number}" in existing:
            number += 1
        steps.append(
            {
                "id": f"{step_type}_{number}",
                "type": step_type,
                "depends_on": [steps[-1]["id"]] if steps else [],
                "config": json.loads(json.dumps(STEP_TEMPLATES[step_type])),
                "timeout_seconds": 30,
                "retries": 0,
                "retry_backoff_seconds": 1,
                "on_failure": "stop",
            }
        )
    elif name == "remove" and 0 <= index < len(steps):
        removed = steps.pop(index)
        for step in steps:
            step["depends_on"] = [item for item in step["depends_on"] if item != removed["id"]]
    elif name == "up" and 0 < index < len(steps):
        steps[index - 1], steps[index] = steps[index], steps[index - 1]
    elif name == "down" and 0 <= index < len(steps) - 1:
        steps[index + 1], steps[index] = steps[index], steps[index + 1]
    elif name == "raw":
        try:
            document = json.loads(form.get("raw", ""))
        except ValueError as error:
            state.problems.append({"field": "raw", "message": f"the JSON does not parse: {error}"})
            return
        if not isinstance(document, dict):
            state.problems.append(
                {"field": "raw", "message": "the JSON must be an object with name, trigger and steps"}
            )
            return
        document.setdefault("steps", [])
        document.setdefault("trigger", {"type": "manual"})
        state.definition = document
