"""The admin console in a browser: find a user, deactivate them, read the audit log, turn on maintenance."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_deactivate_user_then_maintenance(page, browser, live_server, make_user):
    admin = make_user(email="root@example.com", is_admin=True)
    make_user(email="ada@example.com", name="Ada Lovelace")
    make_user(email="grace@example.com", name="Grace Hopper")

    page.goto("/signin")
    page.fill("input[name=email]", admin["email"])
    page.fill("input[name=password]", admin["password"])
    page.click("button:has-text('Sign in')")
    page.click("nav >> text=Admin")
    expect(page.locator("h1")).to_have_text("Admin")

    page.click(".admin-nav >> text=Users")
    page.fill("#user-search", "lovelace")
    page.click("button:has-text('Search')")
    table = page.locator("#users-table")
    expect(table).to_contain_text("1 user.")
    expect(table).not_to_contain_text("grace@example.com")
    table.locator("a", has_text="ada@example.com").click()
    expect(page.locator("h1")).to_have_text("ada@example.com")

    page.click("button:has-text('Deactivate')")
    expect(page.locator(".flash-success")).to_contain_text("ada@example.com is deactivated")
    expect(page.locator("#user-status")).to_have_text("disabled")
    expect(page.locator("#user-audit")).to_contain_text("user.deactivated")
    expect(page.locator("#user-audit")).to_contain_text("root@example.com")

    page.click(".admin-nav >> text=Audit log")
    expect(page.locator("#audit-log tbody tr").first).to_contain_text("user.deactivated")

    page.click(".admin-nav >> text=Overview")
    page.fill("textarea[name=message]", "Upgrading the database, back by six.")
    page.click("button:has-text('Turn maintenance mode on')")
    expect(page.locator("#maintenance-banner")).to_contain_text("Upgrading the database, back by six.")

    visitor = browser.new_context(base_url=live_server)
    try:
        other_page = visitor.new_page()
        other_page.goto("/signin")
        expect(other_page.locator("#maintenance-banner")).to_contain_text("Upgrading the database, back by six.")
    finally:
        visitor.close()
