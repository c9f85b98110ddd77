import json
from datetime import UTC, datetime

import pytest

from app.auth.models import ApiKey
from app.events.models import Event
from app.extensions import db
from app.insights.models import AnalysisState
from app.timeutil import utcnow


@pytest.fixture
def account(make_user, make_api_key):
    """A user with an API key; `headers` authenticate as them."""
    user = make_user()
    key = make_api_key(user)
    return {**user, "key": key, "headers": {"Authorization": f"Bearer {key}"}}


def make_event(**overrides):
    return {"type": "file_modified", "path": "src/app.py", "tool": "vim", "occurred_at": "2025-02-13T09:16:25Z"} | (
        overrides
    )


def count_events(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Event.id)))


def stored_ids(app):
    with app.app_context():
        return set(db.session.scalars(db.select(Event.id)))


def test_create_event_stores_it(client, app, account):
    response = client.post(
        "/api/v1/events",
        json=make_event(session="c1", event_id="e-1", metadata={"lines_added": 3}),
        headers=account["headers"],
    )

    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/events/{body['id']}"
    assert body["type"] == "file_modified"
    assert body["path"] == "src/app.py"
    assert body["tool"] == "vim"
    assert body["occurred_at"] == "2025-02-13T09:16:25Z"
    assert body["session"] == "c1"
    assert body["event_id"] == "e-1"
    assert body["metadata"] == {"lines_added": 3}
    assert body["source"] == "api"
    assert body["user_id"] == account["id"]
    assert body["received_at"].endswith("Z")
    with app.app_context():
        event = db.session.get(Event, body["id"])
        assert event.org_id == account["org_id"]
        assert event.meta == {"lines_added": 3}


def test_create_event_offsets_store_same_instant(client, app, account):
    first = client.post(
        "/api/v1/events", json=make_event(occurred_at="2025-02-13T09:16:25Z"), headers=account["headers"]
    )
    second = client.post(
        "/api/v1/events", json=make_event(occurred_at="2025-02-13T10:16:25+01:00"), headers=account["headers"]
    )

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.get_json()["occurred_at"] == "2025-02-13T09:16:25Z"
    instant = datetime(2025, 2, 13, 9, 16, 25, tzinfo=UTC)
    with app.app_context():
        db.session.expire_all()
        stored = db.session.scalars(db.select(Event.occurred_at).order_by(Event.id)).all()
        assert stored == [instant, instant]
        # The database itself compares them as one instant, not only the Python side.
        matching = db.session.scalar(db.select(db.func.count(Event.id)).where(Event.occurred_at == instant))
        assert matching == 2


def test_create_event_resend_returns_existing(client, app, account):
    first = client.post("/api/v1/events", json=make_event(event_id="e-1"), headers=account["headers"])
    again = client.post("/api/v1/events", json=make_event(event_id="e-1", path="other.py"), headers=account["headers"])

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["path"] == "src/app.py"
    assert count_events(app) == 1


INVALID_EVENTS = [
    pytest.param({"type": "file_renamed"}, "type", "must be one of", id="unknown-type"),
    pytest.param({"occurred_at": None}, "occurred_at", "ISO 8601", id="null-occurred-at"),
    pytest.param({"occurred_at": "2025-02-30T10:00:00Z"}, "occurred_at", "not a valid date", id="impossible-date"),
    pytest.param({"occurred_at": "2025-02-13T09:16:25"}, "occurred_at", "no UTC offset", id="no-offset"),
    pytest.param({"occurred_at": 1739438185}, "occurred_at", "not a number", id="number-timestamp"),
    pytest.param(
        {"metadata": {"a": {"b": {"c": {"d": {"e": 1}}}}}}, "metadata", "limit of 4 levels", id="metadata-deep"
    ),
    pytest.param({"metadata": {"notes": "x" * 5000}}, "metadata", "the limit is 4096 bytes", id="metadata-large"),
    pytest.param({"metadata": ["a"]}, "metadata", "must be a JSON object", id="metadata-array"),
    pytest.param({"path": "src/\x00app.py"}, "path", "NUL character", id="nul-in-path"),
    pytest.param({"metadata": {"branch": "main\x00"}}, "metadata", "NUL character", id="nul-in-metadata-value"),
    pytest.param({"metadata": {"bra\x00nch": "main"}}, "metadata", "NUL character", id="nul-in-metadata-key"),
    pytest.param({"tool": "vim\x00"}, "tool", "NUL character", id="nul-in-tool"),
    pytest.param({"path": "\ud800.py"}, "path", "lone surrogate", id="lone-surrogate"),
    pytest.param({"metadata": {"note": "\udfff"}}, "metadata", "lone surrogate", id="lone-surrogate-in-metadata"),
    pytest.param({"path": ""}, "path", "at least 1 character", id="empty-path"),
    pytest.param({"path": "p" * 1025}, "path", "at most 1024 characters", id="long-path"),
    pytest.param({"colour": "red"}, "colour", "not a field of an event", id="unknown-field"),
    pytest.param({"source": "git"}, "source", "'api' or 'agent'", id="server-only-source"),
]


@pytest.mark.parametrize(("overrides", "field", "phrase"), INVALID_EVENTS)
def test_create_event_rejects_invalid(client, app, account, overrides, field, phrase):
    response = client.post("/api/v1/events", json=make_event(**overrides), headers=account["headers"])

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_event"
    assert field in error["message"]
    assert phrase in error["message"]
    assert [detail["field"] for detail in error["details"]] == [field]
    assert count_events(app) == 0


def test_create_event_rejects_missing_occurred_at(client, app, account):
    event = make_event()
    del event["occurred_at"]

    response = client.post("/api/v1/events", json=event, headers=account["headers"])

    assert response.status_code == 422
    message = response.get_json()["error"]["message"]
    assert "occurred_at is required" in message
    assert "2025-02-13T09:16:25Z" in message
    assert count_events(app) == 0


@pytest.mark.parametrize("url", ["/api/v1/events", "/api/v1/events/batch"])
@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        pytest.param("not json", "not valid JSON", id="text"),
        pytest.param("", "it is empty", id="empty"),
        pytest.param('{"type": "file_opened",', "not valid JSON", id="truncated"),
        pytest.param('{"metadata": NaN}', "NaN is not a JSON number", id="nan"),
        pytest.param('[{"type": "file_opened"}]', "must be a JSON object, not an array", id="array"),
        pytest.param('"event"', "must be a JSON object, not a string", id="string"),
    ],
)
def test_post_rejects_body_that_is_not_json_object(client, app, account, url, data, phrase):
    response = client.post(url, data=data, content_type="application/json", headers=account["headers"])

    assert response.status_code == 400
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == "invalid_json"
    assert phrase in error["message"]
    assert count_events(app) == 0


@pytest.mark.parametrize("url", ["/api/v1/events", "/api/v1/events/batch"])
def test_post_without_key_rejected(client, app, url):
    body = make_event() if url.endswith("events") else {"events": [make_event()]}

    response = client.post(url, json=body)

    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "missing_api_key"
    assert "Authorization: Bearer KEY" in error["message"]
    assert count_events(app) == 0


@pytest.mark.parametrize("url", ["/api/v1/events", "/api/v1/events/batch"])
def test_post_with_revoked_key_rejected(client, app, account, url):
    with app.app_context():
        api_key = db.session.scalar(db.select(ApiKey).where(ApiKey.user_id == account["id"]))
        api_key.revoked_at = utcnow()
        db.session.commit()
    body = make_event() if url.endswith("events") else {"events": [make_event()]}

    response = client.post(url, json=body, headers=account["headers"])

    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "revoked" in error["message"]
    assert count_events(app) == 0


def test_batch_stores_valid_items_and_reports_each(client, app, account):
    events = [
        make_event(event_id="a"),
        make_event(type="file_renamed", event_id="b"),
        make_event(path="docs/readme.md"),
        make_event(occurred_at="2025-02-13T09:16:25", event_id="d"),
        make_event(type="command_executed", path="make test", tool="make", event_id="e"),
    ]

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert response.status_code == 200
    body = response.get_json()
    assert body["accepted"] == 3
    assert body["duplicates"] == 0
    assert body["rejected"] == 2
    assert [result["index"] for result in body["results"]] == [0, 1, 2, 3, 4]
    assert [result["status"] for result in body["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
    ]
    assert body["results"][1]["errors"][0]["field"] == "type"
    assert body["results"][3]["errors"][0]["field"] == "occurred_at"
    assert "no UTC offset" in body["results"][3]["errors"][0]["message"]
    reported = {result["id"] for result in body["results"] if result["status"] == "accepted"}
    assert stored_ids(app) == reported
    with app.app_context():
        paths = {event.id: event.path for event in db.session.scalars(db.select(Event))}
    assert paths[body["results"][2]["id"]] == "docs/readme.md"
    assert paths[body["results"][4]["id"]] == "make test"


def test_batch_matches_ids_to_items_without_event_id(client, app, account):
    events = [make_event(path=f"file-{index}.py") for index in range(30)]

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert response.status_code == 200
    with app.app_context():
        paths = {event.id: event.path for event in db.session.scalars(db.select(Event))}
    for index, result in enumerate(response.get_json()["results"]):
        assert paths[result["id"]] == f"file-{index}.py"


def test_batch_all_rejected_is_422(client, app, account):
    events = [make_event(type="nope"), make_event(path="")]

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert response.status_code == 422
    body = response.get_json()
    assert body["accepted"] == 0
    assert body["rejected"] == 2
    assert [result["status"] for result in body["results"]] == ["rejected", "rejected"]
    assert body["error"]["code"] == "invalid_events"
    assert count_events(app) == 0


def test_batch_resend_stores_nothing_new(client, app, account):
    events = [make_event(event_id=f"e-{index}", path=f"f{index}.py") for index in range(5)]
    first = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    again = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert first.status_code == 200
    assert again.status_code == 200
    body = again.get_json()
    assert body["accepted"] == 0
    assert body["duplicates"] == 5
    assert [result["status"] for result in body["results"]] == ["duplicate"] * 5
    assert [result["id"] for result in body["results"]] == [result["id"] for result in first.get_json()["results"]]
    assert count_events(app) == 5


def test_batch_repeated_event_id_stored_once(client, app, account):
    events = [make_event(event_id="same"), make_event(event_id="other"), make_event(event_id="same", path="x.py")]

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    body = response.get_json()
    assert response.status_code == 200
    assert [result["status"] for result in body["results"]] == ["accepted", "accepted", "duplicate"]
    assert body["results"][2]["id"] == body["results"][0]["id"]
    assert count_events(app) == 2


def test_batch_new_and_known_event_ids_mixed(client, app, account):
    client.post("/api/v1/events/batch", json={"events": [make_event(event_id="old")]}, headers=account["headers"])

    response = client.post(
        "/api/v1/events/batch",
        json={"events": [make_event(event_id="new"), make_event(event_id="old"), make_event()]},
        headers=account["headers"],
    )

    body = response.get_json()
    assert [result["status"] for result in body["results"]] == ["accepted", "duplicate", "accepted"]
    assert body["accepted"] == 2
    assert body["duplicates"] == 1
    assert count_events(app) == 3


def test_batch_over_count_limit_rejected(client, app, account):
    app.config["EVENTS_BATCH_MAX_EVENTS"] = 3
    events = [make_event(path=f"f{index}.py") for index in range(4)]

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "batch_too_large"
    assert "4 events" in error["message"]
    assert "limit is 3" in error["message"]
    assert count_events(app) == 0


def test_batch_over_byte_limit_rejected(client, app, account):
    app.config["EVENTS_BATCH_MAX_BYTES"] = 2000
    events = [make_event(path=f"src/module_{index}.py") for index in range(30)]

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "batch_too_large"
    assert "2000 bytes" in error["message"]
    assert count_events(app) == 0


def test_batch_empty_rejected(client, app, account):
    response = client.post("/api/v1/events/batch", json={"events": []}, headers=account["headers"])

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "empty_batch"
    assert "no events" in error["message"]
    assert count_events(app) == 0


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        pytest.param({}, "events is missing", id="missing-events"),
        pytest.param({"events": {"type": "file_opened"}}, "events is an object", id="events-object"),
        pytest.param({"events": [make_event()], "user": 3}, "Unknown field 'user'", id="unknown-field"),
        pytest.param({"events": [make_event()], "source": "git"}, "source must be one of", id="server-only-source"),
    ],
)
def test_batch_rejects_invalid_envelope(client, app, account, body, phrase):
    response = client.post("/api/v1/events/batch", json=body, headers=account["headers"])

    assert response.status_code == 422
    assert phrase in response.get_json()["error"]["message"]
    assert count_events(app) == 0


def test_batch_source_applies_to_items(client, app, account):
    events = [make_event(), make_event(source="api")]

    response = client.post(
        "/api/v1/events/batch", json={"events": events, "source": "agent"}, headers=account["headers"]
    )

    assert response.status_code == 200
    with app.app_context():
        sources = db.session.scalars(db.select(Event.source).order_by(Event.id)).all()
    assert sources == ["agent", "api"]


def test_batch_requests_analysis_once(client, app, account, monkeypatch):
    enqueued = []
    monkeypatch.setattr(
        "app.insights.service.enqueue_after_commit", lambda func, *args, **kwargs: enqueued.append(args)
    )

    for batch in range(3):
        events = [make_event(event_id=f"b{batch}-{index}") for index in range(10)]
        response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])
        assert response.status_code == 200

    assert enqueued == [(account["org_id"],)]
    with app.app_context():
        state = db.session.get(AnalysisState, account["org_id"])
        assert state.queued is True


def test_batch_of_duplicates_requests_no_analysis(client, app, account, monkeypatch):
    events = [make_event(event_id="e-1")]
    client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])
    with app.app_context():
        # As if the analysis had started since: the next new event would queue another one.
        db.session.execute(db.update(AnalysisState).values(queued=False))
        db.session.commit()
    enqueued = []
    monkeypatch.setattr(
        "app.insights.service.enqueue_after_commit", lambda func, *args, **kwargs: enqueued.append(args)
    )

    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])

    assert response.get_json()["duplicates"] == 1
    assert enqueued == []


def post_batch(client, account, events):
    response = client.post("/api/v1/events/batch", json={"events": events}, headers=account["headers"])
    assert response.status_code == 200, response.get_json()
    return [result["id"] for result in response.get_json()["results"]]


def test_get_event(client, account):
    [event_pk] = post_batch(client, account, [make_event(metadata={"k": [1, 2]})])

    response = client.get(f"/api/v1/events/{event_pk}", headers=account["headers"])

    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == event_pk
    assert body["metadata"] == {"k": [1, 2]}
    assert body["occurred_at"] == "2025-02-13T09:16:25Z"


def test_list_walks_all_pages_in_order(client, account):
    # Five events share one instant, so the order and the cursor must fall back on the id.
    times = ["2025-02-13T09:00:00Z"] * 5 + [f"2025-02-13T09:{minute:02d}:30+00:00" for minute in range(1, 8)]
    ids = post_batch(client, account, [make_event(occurred_at=when, path=f"f{i}.py") for i, when in enumerate(times)])
    expected = [
        event_pk for _, event_pk in sorted(zip(times, ids, strict=True), key=lambda pair: (pair[0][11:19], pair[1]))
    ]
    expected.reverse()

    seen = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        response = client.get("/api/v1/events", query_string=query, headers=account["headers"])
        assert response.status_code == 200
        body = response.get_json()
        seen.extend(event["id"] for event in body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert seen == expected
    assert pages == 3


def test_list_filters(client, account):
    ids = post_batch(
        client,
        account,
        [
            make_event(type="file_opened", path="src/a.py", tool="vim", occurred_at="2025-02-10T08:00:00Z"),
            make_event(type="file_modified", path="src/b.py", tool="code", occurred_at="2025-02-11T08:00:00Z"),
            make_event(type="file_modified", path="docs/c.md", tool="vim", occurred_at="2025-02-12T08:00:00Z"),
            make_event(type="command_executed", path="src%/d", tool="make", occurred_at="2025-02-13T08:00:00Z"),
            make_event(type="file_modified", path="SRC/e.py", tool="vim", occurred_at="2025-02-14T08:00:00Z"),
        ],
    )

    def listed(**query):
        response = client.get("/api/v1/events", query_string=query, headers=account["headers"])
        assert response.status_code == 200, response.get_json()
        return [event["id"] for event in response.get_json()["data"]]

    assert listed(type="file_modified") == [ids[4], ids[2], ids[1]]
    assert listed(tool="vim") == [ids[4], ids[2], ids[0]]
    assert listed(path_prefix="src/") == [ids[1], ids[0]]
    assert listed(path_prefix="src%") == [ids[3]]
    # Inclusive at both ends; the offset is honoured (09:00+01:00 is 08:00 UTC).
    assert listed(**{"from": "2025-02-11T09:00:00+01:00", "to": "2025-02-13T08:00:00Z"}) == [ids[3], ids[2], ids[1]]
    assert listed(type="file_modified", tool="vim", path_prefix="docs/") == [ids[2]]


@pytest.mark.parametrize(
    ("query", "code", "phrase"),
    [
        pytest.param({"type": "file_renamed"}, "invalid_filter", "type must be one of", id="type"),
        pytest.param({"from": "2025-02-13T09:00:00"}, "invalid_filter", "from has no UTC offset", id="from-no-offset"),
        pytest.param({"to": "2025-02-30T09:00:00Z"}, "invalid_filter", "to is not a valid date", id="to-impossible"),
        pytest.param(
            {"from": "2025-02-14T00:00:00Z", "to": "2025-02-13T00:00:00Z"}, "invalid_filter", "later than", id="range"
        ),
        pytest.param({"limit": "0"}, "invalid_limit", "limit must be", id="limit"),
        pytest.param({"cursor": "garbage"}, "invalid_cursor", "cursor is invalid", id="cursor"),
        pytest.param({"cursor": "WyJ4IiwxXQ"}, "invalid_cursor", "cursor is invalid", id="cursor-bad-values"),
    ],
)
def test_list_rejects_bad_query(client, account, query, code, phrase):
    response = client.get("/api/v1/events", query_string=query, headers=account["headers"])

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    assert phrase in error["message"]


def test_events_of_other_org_invisible(client, make_user, make_api_key, account):
    [event_pk] = post_batch(client, account, [make_event(event_id="mine")])
    other = make_user()
    other_headers = {"Authorization": f"Bearer {make_api_key(other)}"}

    listed = client.get("/api/v1/events", headers=other_headers)
    single = client.get(f"/api/v1/events/{event_pk}", headers=other_headers)
    resent = client.post("/api/v1/events", json=make_event(event_id="mine"), headers=other_headers)

    assert listed.status_code == 200
    assert listed.get_json() == {"data": [], "next_cursor": None}
    assert single.status_code == 404
    assert single.get_json()["error"]["code"] == "not_found"
    # The same client id in another organization is a new event, not a duplicate of this one.
    assert resent.status_code == 201
    assert resent.get_json()["id"] != event_pk


def test_openapi_lists_event_routes(client):
    document = client.get("/api/v1/openapi.json").get_json()

    paths = document["paths"]
    schemas = document["components"]["schemas"]
    assert paths["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventIn"
    }
    assert "201" in paths["/api/v1/events"]["post"]["responses"]
    assert paths["/api/v1/events/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventBatchIn"
    }
    batch_response = paths["/api/v1/events/batch"]["post"]["responses"]["200"]
    assert batch_response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BatchResponse"}
    listed = paths["/api/v1/events"]["get"]
    assert {parameter["name"] for parameter in listed["parameters"]} >= {"type", "tool", "path_prefix", "from", "to"}
    assert "/api/v1/events/{event_pk}" in paths
    assert set(schemas["EventIn"]["properties"]) == {
        "type",
        "path",
        "tool",
        "occurred_at",
        "session",
        "event_id",
        "metadata",
        "source",
    }
    assert schemas["EventIn"]["additionalProperties"] is False
    assert "occurred_at" in schemas["EventIn"]["required"]
    assert "EventOut" in schemas


def test_batch_over_max_content_length(client, account):
    # Werkzeug rejects bodies over MAX_CONTENT_LENGTH before the view runs; the response is still the envelope.
    client.application.config["MAX_CONTENT_LENGTH"] = 100
    body = json.dumps({"events": [make_event()] * 5})

    response = client.post(
        "/api/v1/events/batch", data=body, content_type="application/json", headers=account["headers"]
    )

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
