"""The main pages under the Content-Security-Policy: nothing is blocked, and HTMX still swaps."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from app.timeutil import isoformat, utcnow

pytestmark = pytest.mark.browser

# Recorded in the page before any of its own scripts run; Playwright's init scripts are not
# subject to the page's CSP.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ${where}`);
});
"""
WORKFLOW = {
    "name": "Shape paths",
    "trigger": {"type": "manual"},
    "steps": [{"id": "shape", "type": "transform", "config": {"input": "{{ trigger }}"}}],
}


def sign_in(page, user):
    page.goto("/signin")
    page.fill("input[name=email]", user["email"])
    page.fill("input[name=password]", user["password"])
    page.click("button:has-text('Sign in')")
    expect(page.locator("h1")).to_have_text("Dashboard")


@pytest.fixture
def csp_messages(page):
    """Collect the console messages in which Chromium reports a blocked script, style or frame."""
    messages = []
    page.on(
        "console",
        lambda message: messages.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.add_init_script(RECORD_VIOLATIONS)
    return messages


def test_main_pages_report_no_csp_violation(page, csp_messages, make_user, make_api_key, wait_for_jobs):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    now = utcnow()
    events = [
        {
            "type": "file_modified",
            "path": f"src/module{index}.py",
            "tool": "vim",
            "occurred_at": isoformat(now - timedelta(days=index)),
        }
        for index in range(5)
    ]
    assert page.request.post("/api/v1/events/batch", data={"events": events}, headers=headers).status == 200
    created = page.request.post("/api/v1/workflows", data={"definition": WORKFLOW}, headers=headers)
    assert created.status == 201
    workflow_id = created.json()["id"]
    wait_for_jobs()
    sign_in(page, user)

    pages = {
        "/": "h1",
        "/events": "#events-table",
        "/analytics?tz=UTC": "#chart-activity .main-svg",
        f"/workflows/{workflow_id}/edit": "#editor",
        "/workflows/new": "#editor",
        "/files": "#file-listing",
        "/settings": "h1",
        "/org/audit": "#audit-log",
    }
    for path, ready in pages.items():
        response = page.goto(path)
        assert response.status == 200, path
        assert "script-src 'self';" in response.headers["content-security-policy"], path
        expect(page.locator(ready).first).to_be_attached()
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__cspViolations") == [], path
    assert csp_messages == []


def test_htmx_swap_works_under_csp(page, csp_messages, make_user, make_api_key):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    occurred_at = isoformat(utcnow())
    events = [
        {"type": "file_opened", "path": "docs/guide.md", "tool": "code", "occurred_at": occurred_at},
        {"type": "command_executed", "path": "build.py", "tool": "make", "occurred_at": occurred_at},
    ]
    assert page.request.post("/api/v1/events/batch", data={"events": events}, headers=headers).status == 200
    sign_in(page, user)
    page.goto("/events")
    table = page.locator("#events-table")
    expect(table).to_contain_text("docs/guide.md")
    expect(table).to_contain_text("build.py")

    with page.expect_request(lambda request: request.headers.get("hx-request") == "true"):
        page.select_option("select[name=type]", "command_executed")
        page.click("#events-table >> xpath=preceding::button[1]")

    expect(table).not_to_contain_text("docs/guide.md")
    expect(table).to_contain_text("build.py")
    assert "type=command_executed" in page.url
    assert page.evaluate("window.__cspViolations") == []
    assert csp_messages == []


def test_delete_asks_for_confirmation(page, csp_messages, make_user, make_api_key):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    created = page.request.post("/api/v1/workflows", data={"definition": WORKFLOW}, headers=headers)
    assert created.status == 201
    detail = f"/workflows/{created.json()['id']}"
    sign_in(page, user)
    page.goto(detail)
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    page.click("button:has-text('Delete workflow')")
    page.wait_for_timeout(300)
    still_there = page.request.get(f"/api/v1{detail}", headers=headers).status
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    page.click("button:has-text('Delete workflow')")
    page.wait_for_url("**/workflows")

    assert questions == ["Delete this workflow with its versions and runs?"] * 2
    assert still_there == 200
    assert page.request.get(f"/api/v1{detail}", headers=headers).status == 404
    assert csp_messages == []
