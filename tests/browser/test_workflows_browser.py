"""From a suggestion to a workflow in a browser: create it, add a step, run it, watch it end; then break a step."""

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.insights.models import Pattern, Suggestion

pytestmark = pytest.mark.browser

DRAFT = {
    "name": "Label new reports",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "shape", "type": "transform", "config": {"input": {"path": "{{ trigger.path }}"}}},
    ],
}


def _suggestion(app, org_id):
    with app.app_context():
        pattern = Pattern(org_id=org_id, kind="sequence", key="browser", data={})
        db.session.add(pattern)
        db.session.flush()
        suggestion = Suggestion(
            org_id=org_id, pattern_id=pattern.id, kind="sequence", title="Label reports", workflow_draft=DRAFT
        )
        db.session.add(suggestion)
        db.session.commit()
        suggestion_id = suggestion.id
        db.session.remove()
    return suggestion_id


def test_suggestion_to_succeeded_and_failed_run(page, live_server, app, make_user):
    user = make_user(email="grace@example.com")
    suggestion_id = _suggestion(app, user["org_id"])
    page.goto("/signin")
    page.fill("input[name=email]", user["email"])
    page.fill("input[name=password]", user["password"])
    page.click("button[type=submit]")

    page.goto(f"/workflows/new?suggestion={suggestion_id}")
    expect(page.locator("input[name=name]")).to_have_value("Label new reports")
    page.select_option("select[name=new_step_type]", "transform")
    page.click("button:has-text('Add step')")
    # HTMX swaps the editor in place; the new step depends on the last one.
    added = page.locator("fieldset.step").nth(1)
    expect(added.locator("input[name='steps-1-id']")).to_have_value("transform_2")
    added.locator("textarea[name='steps-1-config']").fill('{"input": {"seen": "{{ steps.shape.output.path }}"}}')
    page.click("button[value=save]")
    expect(page.locator("h1")).to_have_text("Label new reports")
    with app.app_context():
        assert db.session.get(Suggestion, suggestion_id).status == "accepted"
        db.session.remove()

    page.fill("textarea[name=input]", '{"path": "reports/q1.pdf"}')
    page.click("button:has-text('Run')")
    status = page.locator("#run-status [data-run-status]")
    expect(status).to_have_text("succeeded", timeout=60_000)
    assert page.locator("#run-status").get_attribute("hx-trigger") is None
    page.locator("tr[data-step='transform_2'] + tr summary").click()
    expect(page.locator("#run-status")).to_contain_text("reports/q1.pdf")

    page.click("text=Label new reports")
    page.click("text=Edit")
    page.locator("textarea[name='steps-1-config']").fill('{"input": [1, "a"], "operations": [{"filter": "item > 0"}]}')
    page.click("button[value=save]")
    page.click("button:has-text('Run')")
    expect(page.locator("#run-status [data-run-status]")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#run-status .error").first).to_contain_text("cannot compare str 'a' with int 0")
