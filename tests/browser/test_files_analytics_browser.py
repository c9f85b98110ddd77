"""The file manager and the analytics page in a browser: uploads with progress, trash, charts by range."""

from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.timeutil import isoformat, utcnow

pytestmark = pytest.mark.browser

ALPHA = b"alpha report\n" * 2000
BETA = "beta notes — ünïcode\n".encode() * 500


def sign_in(page, user):
    page.goto("/signin")
    page.fill("input[name=email]", user["email"])
    page.fill("input[name=password]", user["password"])
    page.click("button:has-text('Sign in')")
    expect(page.locator("h1")).to_have_text("Dashboard")


def test_upload_rename_download_trash_restore(page, make_user):
    user = make_user()
    sign_in(page, user)
    page.goto("/files")

    page.set_input_files(
        "#file-input",
        files=[
            {"name": "alpha.txt", "mimeType": "text/plain", "buffer": ALPHA},
            {"name": "beta.txt", "mimeType": "text/plain", "buffer": BETA},
        ],
    )

    rows = page.locator("#upload-progress li")
    expect(rows).to_have_count(2)
    expect(page.locator("#upload-progress li.upload-done")).to_have_count(2)
    for index in range(2):
        assert rows.nth(index).locator("progress").get_attribute("value") == "100"
        expect(rows.nth(index).locator(".upload-status")).to_have_text("Uploaded")
    listing = page.locator("#file-listing")
    expect(listing).to_contain_text("alpha.txt")
    expect(listing).to_contain_text("beta.txt")

    listing.locator("a:has-text('alpha.txt')").click()
    page.fill("input[name=name]", "gamma.txt")
    page.click("button:has-text('Rename')")
    expect(page.locator(".flash-success")).to_have_text("Renamed to gamma.txt.")
    expect(page.locator("h1")).to_have_text("gamma.txt")

    with page.expect_download() as download_info:
        page.click("#download-link")
    download = download_info.value
    assert download.suggested_filename == "gamma.txt"
    assert Path(download.path()).read_bytes() == ALPHA

    page.click("button:has-text('Move to the trash')")
    expect(page.locator(".flash-success")).to_have_text("Moved gamma.txt to the trash.")
    expect(page.locator("#file-listing")).not_to_contain_text("gamma.txt")
    expect(page.locator("#file-listing")).to_contain_text("beta.txt")

    page.click("main a[href='/files/trash']")
    expect(page.locator("h1")).to_have_text("Trash")
    trashed = page.locator("tr", has_text="gamma.txt")
    expect(trashed).to_be_visible()
    trashed.locator("button:has-text('Restore')").click()
    expect(page.locator(".flash-success")).to_have_text("Restored gamma.txt.")
    page.goto("/files")
    expect(page.locator("#file-listing")).to_contain_text("gamma.txt")


def test_analytics_range_changes_charts(page, make_user, make_api_key, wait_for_jobs):
    user = make_user()
    key = make_api_key(user)
    now = utcnow()
    recent = [{"type": "file_modified", "path": "src/app.py", "tool": "vim"}] * 3
    older = [{"type": "file_opened", "path": "docs/guide.md", "tool": "code"}] * 5
    events = [{**item, "occurred_at": isoformat(now - timedelta(days=2))} for item in recent] + [
        {**item, "occurred_at": isoformat(now - timedelta(days=20))} for item in older
    ]
    stored = page.request.post(
        "/api/v1/events/batch", data={"events": events}, headers={"Authorization": f"Bearer {key}"}
    )
    assert stored.status == 200
    # A job adds the stored batch to the rollups that the page reads.
    wait_for_jobs()
    sign_in(page, user)

    page.goto("/analytics?tz=UTC")
    activity = page.locator("#chart-activity")
    expect(activity.locator(".main-svg").first).to_be_attached()
    events_figure = page.locator("[data-figure-name=events] strong")
    expect(events_figure).to_have_text("8")
    assert page.evaluate("document.getElementById('chart-activity').data[0].x.length") == 30
    thirty_days = page.locator("#analytics-range").get_attribute("data-range")

    page.select_option("#range-select", "7")

    expect(page.locator("#analytics-range")).not_to_have_attribute("data-range", thirty_days)
    expect(events_figure).to_have_text("3")
    expect(page.locator("#chart-activity .main-svg").first).to_be_attached()
    assert page.evaluate("document.getElementById('chart-activity').data[0].x.length") == 7
    assert page.evaluate("document.getElementById('chart-activity').data.map((trace) => trace.name)") == [
        "file_modified"
    ]
    assert "range=7" in page.url
    # A top list of one tool is one bar high, not one bar stretched over the full chart height.
    assert page.evaluate("document.getElementById('chart-top-tools').layout.height") == 88


def test_analytics_without_events_explains(page, make_user):
    user = make_user()
    sign_in(page, user)

    page.goto("/analytics")

    expect(page.locator("#analytics-empty h2")).to_have_text("No activity yet")
    expect(page.locator("#analytics-empty a", has_text="Import a git history")).to_have_attribute(
        "href", "/events/import"
    )
    expect(page.locator(".chart")).to_have_count(0)
