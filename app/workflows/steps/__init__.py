"""Step types: what each one does with its rendered config.

A handler takes a StepContext and returns the step's output (a JSON object), or raises StepFailed.
Handlers that block on the network or the disk hand that part to `context.in_thread`, so the
step's timeout holds however long the call would take.
"""

import logging
import threading

from flask import current_app

from app.workflows.steps import data, events, files, network

logger = logging.getLogger(__name__)


class StepFailed(Exception):
    """A step that failed; `reason` is "timeout", "blocked" or "error"."""

    def __init__(self, message, reason="error"):
        super().__init__(message)
        self.reason = reason


class StepContext:
    def __init__(self, *, org_id, user_id, run_id, step, config, values, timeout, attempt_number):
        self.org_id = org_id
        self.user_id = user_id
        self.run_id = run_id
        self.step = step
        self.config = config
        # The template context: trigger data and earlier steps' outputs.
        self.values = values
        self.timeout = timeout
        self.attempt_number = attempt_number
        self.lines = []

    def log(self, message):
        self.lines.append(message)

    def integration_settings(self, name, kinds):
        """Decrypted settings of the organization's integration `name`, for this step only."""
        from app.errors import ServiceError
        from app.integrations import service as integrations
        from app.integrations.crypto import SecretsUnreadable

        try:
            integration = integrations.find_by_name(self.org_id, name, kinds)
            return integrations.resolved_settings(integration)
        except (ServiceError, SecretsUnreadable) as error:
            raise StepFailed(getattr(error, "message", str(error))) from None

    def in_thread(self, func):
        """Run `func()` on a thread in this app's context; fail with "timeout" when the step's time is up.

        NOTE: a thread cannot be stopped from outside, so a call that ignores its own timeout keeps
        running in the background after the step has failed; the outbound HTTP and SMTP calls pass
        the same timeout down, so they end on their own.
        """
        app = current_app._get_current_object()
        outcome = {}

        def target():
            with app.app_context():
                try:
                    outcome["value"] = func()
                except BaseException as error:  # handed back to the step's thread below
                    outcome["error"] = error

        thread = threading.Thread(target=target, name=f"step-{self.run_id}-{self.step['id']}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise StepFailed(f"timeout: the step took longer than {self.timeout:g} seconds", "timeout")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")


HANDLERS = {
    "transform": data.run_transform,
    "condition": data.run_condition,
    "http_request": network.run_http_request,
    "webhook": network.run_webhook,
    "notify": network.run_notify,
    "file": files.run_file,
    "record_event": events.run_record_event,
}
# Steps that only compute from their input: the engine runs them inline and saves them in batches.
PURE_STEP_TYPES = ("transform", "condition")
