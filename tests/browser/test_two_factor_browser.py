"""Two-factor sign-in in a browser: enrol, sign in with a code, and sign out another session."""

import pyotp
import pytest
from playwright.sync_api import expect

from app.auth import two_factor_service
from app.auth.models import User, UserSession
from app.extensions import db

pytestmark = pytest.mark.browser

# Ten seconds into a TOTP time step, so no code computed here crosses into the next step.
FROZEN_TIME = 1_800_000_010.0


def sign_in_with_code(page, email, password, code):
    page.goto("/signin")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Sign in')")
    expect(page.locator("h1")).to_have_text("Enter your two-factor code")
    page.fill("input[name=code]", code)
    page.click("button:has-text('Verify')")


def test_enrol_sign_in_and_revoke_session(page, browser, live_server, app, monkeypatch):
    # The live server runs in this process, so the frozen clock applies to its code checks too.
    clock = {"now": FROZEN_TIME}
    monkeypatch.setattr(two_factor_service, "current_time", lambda: clock["now"])
    email, password = "grace@example.com", "a long password"

    page.goto("/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.fill("input[name=confirm]", password)
    page.click("button:has-text('Create account')")
    expect(page.locator("h1")).to_have_text("Dashboard")

    page.click("nav >> text=Settings")
    page.click("text=Manage two-factor sign-in")
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    expect(page.locator(".qr-code svg")).to_be_visible()
    totp = pyotp.TOTP(secret)
    page.fill("#two-factor-enrol input[name=code]", totp.at(clock["now"]))
    page.click("button:has-text('Turn on')")
    expect(page.locator("h2").first).to_have_text("Two-factor sign-in is on")
    backup_codes = page.get_by_test_id("backup-codes").inner_text().split()
    assert len(backup_codes) == 10

    page.click("form.signout button")
    expect(page.locator(".flash-success")).to_contain_text("You are signed out")

    # Another browser signs in first, so the main one has a session to revoke.
    other_context = browser.new_context(base_url=live_server)
    other_context.set_default_timeout(15_000)
    other = other_context.new_page()
    clock["now"] += 30
    sign_in_with_code(other, email, password, totp.at(clock["now"]))
    expect(other.locator("h1")).to_have_text("Dashboard")

    clock["now"] += 30
    sign_in_with_code(page, email, password, "000000")
    expect(page.locator("small.error")).to_contain_text("The code is invalid")
    page.fill("input[name=code]", totp.at(clock["now"]))
    page.click("button:has-text('Verify')")
    expect(page.locator("h1")).to_have_text("Dashboard")

    page.click("nav >> text=Settings")
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#sessions")).to_contain_text("this session")
    page.locator("#sessions tbody button:has-text('Sign out')").click()
    expect(page.locator(".flash-success")).to_contain_text("Session signed out")
    expect(rows).to_have_count(1)

    other.goto("/")
    expect(other.locator("h1")).to_have_text("Sign in")
    other_context.close()
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == email))
        live = db.session.scalars(
            db.select(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        ).all()
        assert len(live) == 1
        assert not live[0].two_factor_pending
