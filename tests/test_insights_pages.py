"""The dashboard and the pattern and suggestion pages."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from app.events.service import insert_events
from app.extensions import db
from app.insights.models import Pattern, Suggestion


def _store_coupled_sessions(app, user, wait_for_jobs, sessions=6):
    """Store `sessions` commits that each change src/app.py and tests/test_app.py; wait for the analysis."""
    start = datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
    events = []
    for number in range(sessions):
        for path in ("src/app.py", "tests/test_app.py"):
            events.append(
                {
                    "type": "file_modified",
                    "path": path,
                    "tool": "git",
                    "occurred_at": start + timedelta(days=number),
                    "session": f"commit-{number}",
                    "event_id": f"{user['org_id']}-{number}-{path}",
                    "metadata": {},
                }
            )
    with app.app_context():
        insert_events(user["org_id"], user["id"], "git", events)
        db.session.commit()
    # Storing events requests the analysis job; the pages read what it stored.
    wait_for_jobs()
    with app.app_context():
        pattern_id = db.session.scalar(
            db.select(Pattern.id).where(Pattern.org_id == user["org_id"], Pattern.kind == "co_used")
        )
        suggestion_id = db.session.scalar(db.select(Suggestion.id).where(Suggestion.pattern_id == pattern_id))
    return pattern_id, suggestion_id


@pytest.fixture
def analysed_user(app, make_user, auth, wait_for_jobs):
    user = make_user()
    user["pattern_id"], user["suggestion_id"] = _store_coupled_sessions(app, user, wait_for_jobs)
    auth.signin(user["email"])
    return user


def test_dashboard_shows_pattern_and_suggestion(client, analysed_user):
    page = client.get("/").get_data(as_text=True)

    assert "src/app.py" in page
    assert "tests/test_app.py" in page
    assert "6 shared sessions" in page
    assert f'id="suggestion-{analysed_user["suggestion_id"]}"' in page
    assert "12" in page  # the events counted in the activity summary


def test_dashboard_sections_are_fragments_with_real_links(client, analysed_user):
    response = client.get("/dashboard/patterns", headers={"HX-Request": "true"})

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html
    assert f'href="/patterns/{analysed_user["pattern_id"]}"' in html
    assert "HX-Request" in response.headers["Vary"]


def test_activity_fragment_signals_finished_analysis(client, analysed_user):
    response = client.get("/dashboard/activity", headers={"HX-Request": "true"})

    assert response.headers["HX-Trigger"] == '{"analysis-finished": null}'
    assert "hx-trigger" not in response.get_data(as_text=True).split("<h2>")[0]


def test_unknown_dashboard_section(client, analysed_user):
    assert client.get("/dashboard/nothing").status_code == 404


def test_patterns_page_filters_by_kind(client, analysed_user):
    co_used = client.get("/patterns?kind=co_used").get_data(as_text=True)
    frequent = client.get("/patterns?kind=frequent_tool").get_data(as_text=True)

    assert "tests/test_app.py" in co_used
    assert "coupling" in co_used
    assert "coupling" not in frequent


def test_patterns_page_rejects_unknown_kind(client, analysed_user):
    response = client.get("/patterns?kind=favourite")

    assert response.status_code == 400
    assert "kind must be one of" in response.get_data(as_text=True)


def test_pattern_page(client, analysed_user):
    response = client.get(f"/patterns/{analysed_user['pattern_id']}")

    assert response.status_code == 200
    assert "shared sessions" in response.get_data(as_text=True)


def test_suggestion_page_shows_code_and_draft(client, analysed_user):
    page = client.get(f"/suggestions/{analysed_user['suggestion_id']}").get_data(as_text=True)

    assert "Sample code" in page
    assert "src/app.py" in page
    assert "&#34;trigger&#34;" in page or '"trigger"' in page
    assert f"/workflows/new?suggestion={analysed_user['suggestion_id']}" in page


def test_accept_with_htmx_swaps_card(client, analysed_user, app):
    suggestion_id = analysed_user["suggestion_id"]

    response = client.post(f"/suggestions/{suggestion_id}/accept", headers={"HX-Request": "true"})

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<article class="suggestion" id="suggestion-{suggestion_id}"')
    assert "badge-accepted" in html
    with app.app_context():
        stored = db.session.get(Suggestion, suggestion_id)
        assert stored.status == "accepted"
        assert stored.decided_by_id == analysed_user["id"]


def test_dismiss_without_javascript_redirects(client, analysed_user, app):
    suggestion_id = analysed_user["suggestion_id"]

    response = client.post(f"/suggestions/{suggestion_id}/dismiss", data={"next": "/suggestions?status=dismissed"})

    assert response.status_code == 302
    assert response.headers["Location"] == "/suggestions?status=dismissed"
    assert f"suggestion-{suggestion_id}" in client.get("/suggestions?status=dismissed").get_data(as_text=True)
    assert f"suggestion-{suggestion_id}" not in client.get("/suggestions").get_data(as_text=True)


def test_dismiss_ignores_offsite_next(client, analysed_user):
    suggestion_id = analysed_user["suggestion_id"]

    response = client.post(f"/suggestions/{suggestion_id}/dismiss", data={"next": "//elsewhere.example/"})

    assert response.headers["Location"] == f"/suggestions/{suggestion_id}"


def test_other_org_sees_nothing(app, analysed_user, make_user):
    other = make_user()
    client = app.test_client()
    client.post("/signin", data={"email": other["email"], "password": other["password"]})
    pattern_id, suggestion_id = analysed_user["pattern_id"], analysed_user["suggestion_id"]

    assert client.get(f"/patterns/{pattern_id}").status_code == 404
    assert client.get(f"/suggestions/{suggestion_id}").status_code == 404
    assert client.post(f"/suggestions/{suggestion_id}/accept").status_code == 404
    assert client.post(f"/suggestions/{suggestion_id}/dismiss").status_code == 404
    for url in ("/", "/patterns", "/suggestions", "/dashboard/patterns", "/dashboard/suggestions"):
        assert "tests/test_app.py" not in client.get(url).get_data(as_text=True), url
    with app.app_context():
        assert db.session.get(Suggestion, suggestion_id).status == "open"


def test_htmx_dashboard_section_needs_signin(app):
    response = app.test_client().get("/dashboard/suggestions", headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert re.match(r"^/signin\?next=", response.headers["HX-Redirect"])


def test_suggestion_list_names_kind(client, analysed_user):
    page = client.get("/suggestions").get_data(as_text=True)

    assert "Files used together" in page
    assert "co_used" not in page
