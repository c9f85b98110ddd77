import re
from datetime import UTC, datetime, timedelta

import pytest

from app.events import service
from app.extensions import db

START = datetime(2025, 2, 13, 9, 0, tzinfo=UTC)


@pytest.fixture
def store_events(app):
    """Store events for a user dict from make_user: store_events(user, [dict(type=..., path=...), ...])."""

    def store(user, events):
        values = [
            {
                "type": event.get("type", "file_modified"),
                "path": event["path"],
                "tool": event.get("tool", "vim"),
                "occurred_at": event.get("occurred_at", START),
                "session": None,
                "event_id": None,
                "metadata": {},
            }
            for event in events
        ]
        with app.app_context():
            results = service.insert_events(user["org_id"], user["id"], "api", values)
            db.session.commit()
        return [event_pk for _, event_pk in results]

    return store


@pytest.fixture
def signed_in(make_user, auth):
    user = make_user()
    auth.signin(user["email"])
    return user


def listed_paths(html):
    return re.findall(r'<td class="path">([^<]*)</td>\s*<td>[^<]*</td>\s*<td class="path">', html)


def test_events_page_requires_signin(client):
    response = client.get("/events")

    assert response.status_code == 302
    assert "/signin" in response.headers["Location"]


def test_events_page_lists_own_events(client, signed_in, store_events):
    store_events(signed_in, [{"path": "src/app.py", "tool": "code", "type": "file_opened"}])

    response = client.get("/events")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" in html
    assert listed_paths(html) == ["src/app.py"]
    assert "file_opened" in html
    assert "2025-02-13 09:00:00" in html


def test_events_page_hides_other_org(client, make_user, signed_in, store_events):
    other = make_user()
    store_events(other, [{"path": "secret/plan.md"}])
    store_events(signed_in, [{"path": "mine.py"}])

    response = client.get("/events")

    html = response.get_data(as_text=True)
    assert listed_paths(html) == ["mine.py"]
    assert "secret/plan.md" not in html


def test_events_page_without_events(client, signed_in):
    response = client.get("/events")

    assert response.status_code == 200
    assert "No events yet" in response.get_data(as_text=True)


def test_events_page_filters(client, signed_in, store_events):
    store_events(
        signed_in,
        [
            {"path": "src/a.py", "type": "file_opened", "occurred_at": START},
            {"path": "src/b.py", "type": "file_modified", "occurred_at": START + timedelta(hours=1)},
            {"path": "docs/c.md", "type": "file_modified", "occurred_at": START + timedelta(hours=2)},
            {"path": "make", "type": "command_executed", "tool": "make", "occurred_at": START + timedelta(hours=3)},
        ],
    )

    by_type = client.get("/events?type=file_modified").get_data(as_text=True)
    by_prefix = client.get("/events?path_prefix=src/").get_data(as_text=True)
    by_tool = client.get("/events?tool=make").get_data(as_text=True)
    # The date inputs carry no zone; the page reads them as UTC, inclusive at both ends.
    by_time = client.get("/events?from=2025-02-13T10:00&to=2025-02-13T11:00:00").get_data(as_text=True)
    nothing = client.get("/events?tool=emacs").get_data(as_text=True)

    assert listed_paths(by_type) == ["docs/c.md", "src/b.py"]
    assert '<option value="file_modified" selected>' in by_type
    assert listed_paths(by_prefix) == ["src/b.py", "src/a.py"]
    assert 'value="src/"' in by_prefix
    assert listed_paths(by_tool) == ["make"]
    assert listed_paths(by_time) == ["docs/c.md", "src/b.py"]
    assert 'value="2025-02-13T10:00:00"' in by_time
    assert "No events match these filters." in nothing


def test_events_page_walks_pages(client, signed_in, store_events):
    paths = [f"file-{index:02d}.py" for index in range(60)]
    store_events(
        signed_in, [{"path": path, "occurred_at": START + timedelta(minutes=index)} for index, path in enumerate(paths)]
    )

    first = client.get("/events?tool=vim").get_data(as_text=True)
    older_href = re.search(
        r'<a href="([^"]+)" hx-get="([^"]+)" hx-target="#events-table" hx-push-url="true">Older', first
    )
    second = client.get(older_href.group(1).replace("&amp;", "&")).get_data(as_text=True)

    assert older_href.group(1) == older_href.group(2)
    assert "cursor=" in older_href.group(1)
    assert "tool=vim" in older_href.group(1)
    assert listed_paths(first) == list(reversed(paths))[:50]
    assert listed_paths(second) == list(reversed(paths))[50:]
    assert ">Older<" not in second
    assert ">Newest<" in second


def test_events_page_htmx_gets_fragment(client, signed_in, store_events):
    store_events(signed_in, [{"path": "src/app.py"}])

    response = client.get("/events", headers={"HX-Request": "true"})

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html
    assert "<form" not in html
    assert listed_paths(html) == ["src/app.py"]
    assert "HX-Request" in response.headers["Vary"]


def test_events_page_history_restore_gets_page(client, signed_in):
    response = client.get("/events", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})

    assert response.status_code == 200
    assert "<html" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "phrase"),
    [
        pytest.param("type=file_renamed", "type must be one of", id="type"),
        pytest.param("from=2025-02-30T10:00", "from is not a valid date", id="impossible-from"),
        pytest.param("to=yesterday", "to is not a valid date", id="text-to"),
        pytest.param("from=2025-02-14T00:00&to=2025-02-13T00:00", "from is later than to", id="reversed-range"),
        pytest.param("cursor=garbage", "cursor is invalid", id="cursor"),
    ],
)
def test_events_page_bad_filter_shows_message(client, signed_in, store_events, query, phrase):
    store_events(signed_in, [{"path": "src/app.py"}])

    page = client.get(f"/events?{query}")
    fragment = client.get(f"/events?{query}", headers={"HX-Request": "true"})

    assert page.status_code == 400
    assert phrase in page.get_data(as_text=True)
    assert "<form" in page.get_data(as_text=True)
    assert fragment.status_code == 200
    assert phrase in fragment.get_data(as_text=True)
    assert listed_paths(page.get_data(as_text=True)) == []
