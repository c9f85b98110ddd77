"""The main job in a browser: sign up, get a key, import a real git log, see patterns, accept a suggestion."""

import re

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.insights.models import Suggestion

pytestmark = pytest.mark.browser


def test_import_to_accepted_suggestion(page, live_server, shared_data, app):
    page.goto("/signup")
    page.fill("input[name=email]", "ada@example.com")
    page.fill("input[name=password]", "a long password")
    page.fill("input[name=confirm]", "a long password")
    page.click("button:has-text('Create account')")
    expect(page.locator("h1")).to_have_text("Dashboard")

    page.click("nav >> text=Settings")
    page.fill("input[name=name]", "laptop agent")
    page.click("button:has-text('Create key')")
    key = page.locator("#new-api-key").inner_text().strip()
    assert key.startswith("floyo_")
    me = page.request.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status == 200
    assert me.json()["email"] == "ada@example.com"

    page.goto("/events/import")
    page.set_input_files("input[type=file]", str(shared_data / "flask-gitlog.txt"))
    page.click("button:has-text('Import')")
    progress = page.locator("#import-progress progress")
    expect(progress).to_be_visible()
    # The fragment polls itself until the job ends; then the bar is full and polling stops.
    expect(page.locator("#import-progress .badge")).to_have_text("succeeded", timeout=120_000)
    assert progress.get_attribute("value") == "100"
    expect(page.locator("#import-progress")).to_contain_text("5,531 of 5,531 commits")
    assert page.locator("#import-progress").get_attribute("hx-trigger") is None

    page.click("text=Go to the dashboard")
    # The activity section polls while the analysis runs, then the other sections reload.
    patterns = page.locator("#patterns")
    expect(patterns).to_contain_text("requirements/tests-pallets-min.in", timeout=120_000)
    expect(patterns).to_contain_text("requirements/tests-pallets-min.txt")
    suggestion = page.locator("#suggestions article.suggestion").first
    expect(suggestion).to_be_visible()
    suggestion_id = int(re.search(r"\d+", suggestion.get_attribute("id")).group())

    suggestion.locator("button:has-text('Accept')").click()

    expect(page.locator(f"#suggestion-{suggestion_id} .badge-accepted")).to_have_text("accepted")
    with app.app_context():
        assert db.session.get(Suggestion, suggestion_id).status == "accepted"
