"""The insights API: patterns, suggestions, accept and dismiss, the analysis, and `flask floyo analyze`."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.extensions import db
from app.insights.models import AnalysisState, Pattern, Suggestion

# A Tuesday.
START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def workday_events(weeks=5):
    """Tuesday sessions: edit data, clean it, run build.py, which creates dist/report.pdf."""
    events = []
    for week in range(weeks):
        at = START + timedelta(weeks=week)
        for minutes, event_type, path in (
            (0, "file_modified", "data/sales.csv"),
            (2, "file_modified", "scripts/clean.py"),
            (3, "command_executed", "build.py"),
            (4, "file_created", "dist/report.pdf"),
            (6, "file_modified", "notes/summary.md"),
        ):
            occurred_at = (at + timedelta(minutes=minutes)).isoformat()
            events.append({"type": event_type, "path": path, "tool": "editor", "occurred_at": occurred_at})
    return events


def wait_for_analysis(app, org_id, wait_for_jobs, timeout=60):
    """Wait until the requested analysis has run; an empty queue may still hide a job just taken."""
    wait_for_jobs(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            state = db.session.get(AnalysisState, org_id)
            if state is not None and not state.queued and state.status in ("succeeded", "failed"):
                return state.status
        time.sleep(0.05)
    raise AssertionError(f"the analysis of organization {org_id} did not finish within {timeout} seconds")


@pytest.fixture
def analysed(app, client, make_user, make_api_key, wait_for_jobs):
    """A user whose workday events went through the API and were analysed: (user, key)."""
    user = make_user()
    key = make_api_key(user)
    response = client.post("/api/v1/events/batch", json={"events": workday_events()}, headers=bearer(key))
    assert response.status_code == 200, response.get_json()
    assert wait_for_analysis(app, user["org_id"], wait_for_jobs) == "succeeded"
    return user, key


def add_suggestion(app, org_id, kind, score):
    """Store a pattern and its suggestion with a given score; return the suggestion id."""
    with app.app_context():
        pattern = Pattern(org_id=org_id, kind=kind, key=uuid.uuid4().hex, score=score, data={}, current=True)
        db.session.add(pattern)
        db.session.flush()
        suggestion = Suggestion(
            org_id=org_id,
            pattern_id=pattern.id,
            kind=kind,
            title=f"{kind} scored {score}",
            score=score,
            evidence={},
            sample_code="",
            workflow_draft={},
        )
        db.session.add(suggestion)
        db.session.commit()
        return suggestion.id


# Patterns


def test_patterns_filter_by_kind_in_pages(client, analysed):
    _, key = analysed

    seen = []
    cursor = None
    while True:
        url = "/api/v1/patterns?kind=co_used&limit=3" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=bearer(key))
        assert response.status_code == 200
        seen += response.get_json()["data"]
        cursor = response.get_json()["next_cursor"]
        if cursor is None:
            break

    # Five files, each in all five sessions: every pair, 100 % coupled.
    assert len(seen) == 10
    assert {pattern["kind"] for pattern in seen} == {"co_used"}
    order = [(-pattern["score"], pattern["id"]) for pattern in seen]
    assert order == sorted(order)
    pair = next(pattern for pattern in seen if pattern["files"] == ["data/sales.csv", "scripts/clean.py"])
    assert pair["shared_sessions"] == 5
    assert pair["degree"] == 100.0
    assert pair["data"]["lift"] == 1.0
    assert pair["summary"] == "data/sales.csv ↔ scripts/clean.py: 5 shared sessions, degree 100.0 %"


def test_patterns_of_every_kind(client, analysed):
    _, key = analysed

    response = client.get("/api/v1/patterns?limit=500", headers=bearer(key))

    kinds = {pattern["kind"] for pattern in response.get_json()["data"]}
    assert kinds == {
        "frequent_file",
        "frequent_type",
        "frequent_tool",
        "co_used",
        "sequence",
        "recurrence",
        "produced",
    }
    sequence = next(pattern for pattern in response.get_json()["data"] if pattern["kind"] == "sequence")
    assert "files" not in sequence
    assert sequence["data"]["support"] == 5


@pytest.mark.parametrize(
    ("query", "code", "parameter"),
    [
        ("kind=pairs", "invalid_filter", "kind"),
        ("include_stale=maybe", "invalid_filter", "include_stale"),
        ("cursor=bm90LWEtY3Vyc29y", "invalid_cursor", None),
        ("limit=0", "invalid_limit", None),
    ],
)
def test_patterns_reject_bad_queries(client, make_user, make_api_key, query, code, parameter):
    key = make_api_key(make_user())

    response = client.get(f"/api/v1/patterns?{query}", headers=bearer(key))

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    if parameter:
        assert error["details"] == {"parameter": parameter}
        assert parameter in error["message"]


def test_pattern_kind_error_lists_kinds(client, make_user, make_api_key):
    key = make_api_key(make_user())

    response = client.get("/api/v1/patterns?kind=pairs", headers=bearer(key))

    assert "co_used" in response.get_json()["error"]["message"]
    assert "'pairs'" in response.get_json()["error"]["message"]


def test_pattern_read_one(client, analysed):
    _, key = analysed
    [listed] = client.get("/api/v1/patterns?kind=produced", headers=bearer(key)).get_json()["data"]

    response = client.get(f"/api/v1/patterns/{listed['id']}", headers=bearer(key))

    assert response.status_code == 200
    assert response.get_json() == listed
    assert listed["data"]["command"] == "build.py"
    assert listed["data"]["product"] == "dist/report.pdf"


def test_patterns_of_another_org_invisible(client, analysed, make_user, make_api_key):
    _, owner_key = analysed
    other_key = make_api_key(make_user())
    pattern_id = client.get("/api/v1/patterns?limit=1", headers=bearer(owner_key)).get_json()["data"][0]["id"]

    listed = client.get("/api/v1/patterns", headers=bearer(other_key))
    read = client.get(f"/api/v1/patterns/{pattern_id}", headers=bearer(other_key))

    assert listed.get_json() == {"data": [], "next_cursor": None}
    assert read.status_code == 404
    assert read.get_json()["error"]["code"] == "not_found"


# Suggestions


def test_suggestions_ranked_with_drafts(client, analysed):
    _, key = analysed

    response = client.get("/api/v1/suggestions?limit=500", headers=bearer(key))

    suggestions = response.get_json()["data"]
    assert {suggestion["kind"] for suggestion in suggestions} == {"co_used", "sequence", "recurrence", "produced"}
    order = [(-suggestion["ranked_score"], suggestion["id"]) for suggestion in suggestions]
    assert order == sorted(order)
    for suggestion in suggestions:
        assert suggestion["status"] == "open"
        assert suggestion["pattern_current"] is True
        assert suggestion["minutes_saved_per_month"] > 0
        assert suggestion["workflow_draft"]["steps"]
        assert suggestion["sample_code"].startswith("#!/usr/bin/env python3")


def test_suggestions_page_with_cursor(app, client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    ids = [add_suggestion(app, user["org_id"], "sequence", score) for score in (3.0, 2.0, 2.0, 1.0)]

    first = client.get("/api/v1/suggestions?limit=2", headers=bearer(key)).get_json()
    cursor = first["next_cursor"]
    second = client.get(f"/api/v1/suggestions?limit=2&cursor={cursor}", headers=bearer(key)).get_json()

    assert [item["id"] for item in first["data"]] == ids[:2]
    assert [item["id"] for item in second["data"]] == ids[2:]
    assert second["next_cursor"] is None


def test_accept_records_the_decision(client, analysed):
    user, key = analysed
    suggestion = client.get("/api/v1/suggestions?kind=produced", headers=bearer(key)).get_json()["data"][0]

    response = client.post(f"/api/v1/suggestions/{suggestion['id']}/accept", headers=bearer(key))

    assert response.status_code == 200
    accepted = response.get_json()
    assert accepted["status"] == "accepted"
    assert accepted["decided_by_id"] == user["id"]
    assert accepted["decided_at"] is not None
    open_ids = [item["id"] for item in client.get("/api/v1/suggestions", headers=bearer(key)).get_json()["data"]]
    assert suggestion["id"] not in open_ids
    accepted_list = client.get("/api/v1/suggestions?status=accepted", headers=bearer(key)).get_json()["data"]
    assert [item["id"] for item in accepted_list] == [suggestion["id"]]


def test_dismiss_then_read(client, analysed):
    _, key = analysed
    suggestion = client.get("/api/v1/suggestions", headers=bearer(key)).get_json()["data"][0]

    client.post(f"/api/v1/suggestions/{suggestion['id']}/dismiss", headers=bearer(key))
    response = client.get(f"/api/v1/suggestions/{suggestion['id']}", headers=bearer(key))

    assert response.status_code == 200
    assert response.get_json()["status"] == "dismissed"


def test_dismissing_a_kind_ranks_another_first(app, client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    co_used = [add_suggestion(app, user["org_id"], "co_used", score) for score in (10.0, 9.0, 8.0, 7.0)]
    sequence = add_suggestion(app, user["org_id"], "sequence", 5.0)
    before = client.get("/api/v1/suggestions", headers=bearer(key)).get_json()["data"]

    for suggestion_id in co_used[:3]:
        client.post(f"/api/v1/suggestions/{suggestion_id}/dismiss", headers=bearer(key))
    after = client.get("/api/v1/suggestions", headers=bearer(key)).get_json()["data"]

    assert before[0]["id"] == co_used[0]
    assert [item["id"] for item in after] == [sequence, co_used[3]]
    # Three dismissals and no acceptance weigh co_used at 2 × 1 / 5 = 0.4.
    assert after[1]["ranked_score"] == pytest.approx(7.0 * 0.4)


def test_accepting_a_kind_ranks_it_higher(app, client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    recurrence = [add_suggestion(app, user["org_id"], "recurrence", score) for score in (6.0, 4.0)]
    produced = add_suggestion(app, user["org_id"], "produced", 5.0)

    client.post(f"/api/v1/suggestions/{recurrence[0]}/accept", headers=bearer(key))
    after = client.get("/api/v1/suggestions", headers=bearer(key)).get_json()["data"]

    # One acceptance weighs recurrence at 2 × 2 / 3: 4.0 becomes 5.33, ahead of 5.0.
    assert [item["id"] for item in after] == [recurrence[1], produced]


def test_suggestion_status_is_validated(client, make_user, make_api_key):
    key = make_api_key(make_user())

    response = client.get("/api/v1/suggestions?status=later", headers=bearer(key))

    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {"parameter": "status"}


def test_suggestions_of_another_org_untouchable(app, client, make_user, make_api_key):
    owner = make_user()
    other_key = make_api_key(make_user())
    suggestion_id = add_suggestion(app, owner["org_id"], "produced", 1.0)

    responses = [
        client.get(f"/api/v1/suggestions/{suggestion_id}", headers=bearer(other_key)),
        client.post(f"/api/v1/suggestions/{suggestion_id}/accept", headers=bearer(other_key)),
        client.post(f"/api/v1/suggestions/{suggestion_id}/dismiss", headers=bearer(other_key)),
    ]
    listed = client.get("/api/v1/suggestions?status=all", headers=bearer(other_key))

    assert [response.status_code for response in responses] == [404, 404, 404]
    assert listed.get_json()["data"] == []
    with app.app_context():
        suggestion = db.session.get(Suggestion, suggestion_id)
        assert suggestion.status == "open"
        assert suggestion.decided_by_id is None


def test_decisions_need_an_api_key(app, client, auth, make_user):
    user = make_user()
    suggestion_id = add_suggestion(app, user["org_id"], "produced", 1.0)
    auth.signin(user["email"])

    read = client.get(f"/api/v1/suggestions/{suggestion_id}")
    accept = client.post(f"/api/v1/suggestions/{suggestion_id}/accept")

    assert read.status_code == 200
    assert accept.status_code == 401
    assert accept.get_json()["error"]["code"] == "missing_api_key"
    with app.app_context():
        assert db.session.get(Suggestion, suggestion_id).status == "open"


# The analysis


def test_analysis_run_and_status(app, client, make_user, make_api_key, wait_for_jobs):
    user = make_user()
    key = make_api_key(user)

    queued = client.post("/api/v1/analysis/run", headers=bearer(key))
    wait_for_analysis(app, user["org_id"], wait_for_jobs)
    status = client.get("/api/v1/analysis/status", headers=bearer(key))

    assert queued.status_code == 202
    assert queued.get_json()["enqueued"] is True
    assert status.status_code == 200
    body = status.get_json()
    assert body["status"] == "succeeded"
    assert body["queued"] is False
    assert body["events_analyzed"] == 0
    assert body["patterns"]["co_used"] == 0
    assert body["suggestions"] == {"open": 0, "accepted": 0, "dismissed": 0}


def test_analysis_status_counts(client, analysed):
    _, key = analysed

    body = client.get("/api/v1/analysis/status", headers=bearer(key)).get_json()

    assert body["events_analyzed"] == 25
    assert body["sessions_analyzed"] == 5
    assert body["patterns"]["co_used"] == 10
    assert body["patterns"]["produced"] == 1
    assert body["suggestions"]["open"] > 0


def test_analysis_run_needs_an_api_key(client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])

    response = client.post("/api/v1/analysis/run")

    assert response.status_code == 401


def test_openapi_describes_insights_routes(client):
    document = client.get("/api/v1/openapi.json").get_json()

    paths = document["paths"]
    page_schema = paths["/api/v1/patterns"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert page_schema == {"$ref": "#/components/schemas/PatternPage"}
    assert "post" in paths["/api/v1/suggestions/{suggestion_id}/accept"]
    assert "post" in paths["/api/v1/suggestions/{suggestion_id}/dismiss"]
    assert "get" in paths["/api/v1/suggestions/{suggestion_id}"]
    assert "get" in paths["/api/v1/patterns/{pattern_id}"]
    assert "post" in paths["/api/v1/analysis/run"]
    assert "get" in paths["/api/v1/analysis/status"]
    assert {"degree", "shared_sessions", "files"} <= set(document["components"]["schemas"]["PatternOut"]["properties"])


# flask floyo analyze


def test_cli_analyze_prints_a_summary(app, analysed):
    user, _ = analysed

    result = app.test_cli_runner().invoke(args=["floyo", "analyze", "--email", user["email"]])

    assert result.exit_code == 0, result.output
    assert f"Organization {user['org_id']}: 25 events in 5 sessions" in result.output
    assert "co_used 10" in result.output
    assert "produced 1" in result.output
    assert "patterns no longer found: 0" in result.output


def test_cli_analyze_all_organizations(app, make_user):
    first, second = make_user(), make_user()

    result = app.test_cli_runner().invoke(args=["floyo", "analyze", "--all"])

    assert result.exit_code == 0, result.output
    assert f"Organization {first['org_id']}: 0 events" in result.output
    assert f"Organization {second['org_id']}: 0 events" in result.output


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        ([], 2, "Give exactly one of --email, --org-id or --all."),
        (["--all", "--org-id", "1"], 2, "Give exactly one of --email, --org-id or --all."),
        (["--email", "nobody@example.com"], 1, "No user with email 'nobody@example.com'"),
        (["--org-id", "999"], 1, "No organization with id 999."),
    ],
)
def test_cli_analyze_rejects_bad_options(app, args, exit_code, message):
    result = app.test_cli_runner().invoke(args=["floyo", "analyze", *args])

    assert result.exit_code == exit_code
    assert message in result.output
