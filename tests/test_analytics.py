"""Analytics: rollups against raw events, the page, the API, trends and the export."""

import csv
import importlib.util
import io
import json
import re
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.analytics import service
from app.analytics.cache import remember_zone
from app.analytics.models import DailyCount, HourlyCount, PathDailyCount, PathHourlyCount, TypeHourlyCount
from app.analytics.query import parse_query
from app.analytics.rollups import extension_of, rebuild_rollups, record_events
from app.analytics.service import build_dashboard
from app.events.models import Event
from app.extensions import db
from app.files.models import File
from app.orgs.models import Membership

TZ = ZoneInfo("America/New_York")


def store_events(app, user, events):
    """Store events as the ingest path does: the rows and their rollups in one transaction."""
    with app.app_context():
        rows = []
        for item in events:
            rows.append(
                Event(
                    org_id=user["org_id"],
                    user_id=user["id"],
                    type=item.get("type", "file_modified"),
                    path=item.get("path", "src/app.py"),
                    tool=item.get("tool", "vim"),
                    occurred_at=item["occurred_at"],
                    session=item.get("session"),
                    source="api",
                    meta=item.get("metadata", {}),
                )
            )
        db.session.add_all(rows)
        db.session.flush()
        record_events(user["org_id"], rows)
        db.session.commit()


def at(day, hour, minute=0):
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def member(make_user):
    return make_user()


def sample_events():
    """Events across several days, hours, types, tools and paths, some on range edges in New York."""
    events = []
    for day in range(1, 15):
        for hour in (3, 4, 5, 13, 23):
            events.append(
                {
                    "occurred_at": at(day, hour, 7),
                    "type": ("file_opened", "file_modified", "command_executed")[(day + hour) % 3],
                    "path": f"docs/report-{day % 4}.md" if hour % 2 else f"src/module{hour}.py",
                    "tool": ("vim", "code", "make")[hour % 3],
                }
            )
    return events


def raw_counts(app, org_id, start, end):
    """Count raw events by local day and type, by tool and by path, for days start..end in New York."""
    with app.app_context():
        events = db.session.scalars(db.select(Event).where(Event.org_id == org_id)).all()
        by_day_type = Counter()
        by_tool = Counter()
        by_path = Counter()
        heat = Counter()
        for event in events:
            local = event.occurred_at.astimezone(TZ)
            if not start <= local.date() <= end:
                continue
            by_day_type[(local.date().isoformat(), event.type)] += 1
            by_tool[event.tool] += 1
            by_path[event.path] += 1
            heat[(local.weekday(), local.hour)] += 1
        return by_day_type, by_tool, by_path, heat


def test_dashboard_matches_raw_events(app, member):
    store_events(app, member, sample_events())
    start, end = date(2025, 3, 3), date(2025, 3, 10)

    with app.app_context():
        query = parse_query({"from": start.isoformat(), "to": end.isoformat(), "tz": TZ.key}, member["org_id"])
        dashboard = build_dashboard(member["org_id"], query)
    by_day_type, by_tool, by_path, heat = raw_counts(app, member["org_id"], start, end)

    activity = dashboard["activity"]
    from_rollups = Counter()
    for series in activity["series"]:
        for period, count in zip(activity["periods"], series["counts"], strict=True):
            if count:
                from_rollups[(period, series["type"])] = count
    assert from_rollups == by_day_type
    assert dashboard["summary"]["events"] == sum(by_day_type.values())
    assert {item["name"]: item["count"] for item in dashboard["top_tools"]} == dict(by_tool)
    assert {item["path"]: item["count"] for item in dashboard["top_files"]} == dict(by_path.most_common(10))
    heatmap = dashboard["heatmap"]["counts"]
    assert {(w, h): heatmap[w][h] for w in range(7) for h in range(24) if heatmap[w][h]} == dict(heat)


def test_rebuild_gives_same_rollups(app, member):
    store_events(app, member, sample_events())
    with app.app_context():
        query = parse_query({"from": "2025-03-01", "to": "2025-03-14"}, member["org_id"])
        before = build_dashboard(member["org_id"], query)
        rebuild_rollups(member["org_id"])
        db.session.commit()
        after = build_dashboard(member["org_id"], query)

    assert after == before


def test_sessions_split_by_gap(app, member):
    store_events(app, member, [{"occurred_at": at(5, 9, 0)}, {"occurred_at": at(5, 9, 50)}])
    # Arrives later and closes the gap: the three events become one session of 50 minutes.
    store_events(app, member, [{"occurred_at": at(5, 9, 25)}])
    store_events(app, member, [{"occurred_at": at(5, 14, 0)}, {"occurred_at": at(5, 14, 0), "session": "abc123"}])

    with app.app_context():
        query = parse_query({"from": "2025-03-05", "to": "2025-03-05"}, member["org_id"])
        sessions = build_dashboard(member["org_id"], query)["sessions"]

    assert sessions["counts"] == [3]
    assert sessions["average_minutes"] == [round(50 / 3, 1)]


def test_week_granularity_sums_days(app, member):
    store_events(app, member, sample_events())
    with app.app_context():
        query = parse_query({"from": "2025-03-03", "to": "2025-03-16", "granularity": "week"}, member["org_id"])
        activity = build_dashboard(member["org_id"], query)["activity"]

    assert activity["periods"] == ["2025-03-03", "2025-03-10"]
    assert sum(sum(series["counts"]) for series in activity["series"]) == 12 * 5


def test_filters_narrow_counts(app, member):
    store_events(app, member, sample_events())
    with app.app_context():
        org_id = member["org_id"]
        everything = build_dashboard(org_id, parse_query({"from": "2025-03-01", "to": "2025-03-14"}, org_id))
        docs = build_dashboard(org_id, parse_query({"from": "2025-03-01", "to": "2025-03-14", "path": "docs/"}, org_id))
        make = build_dashboard(org_id, parse_query({"from": "2025-03-01", "to": "2025-03-14", "tool": "make"}, org_id))

    assert everything["summary"]["events"] == 70
    assert docs["summary"]["events"] == 14 * 4
    assert all(item["path"].startswith("docs/") for item in docs["top_files"])
    assert make["summary"]["events"] == 14 * 2
    assert [item["name"] for item in make["top_tools"]] == ["make"]


def test_api_dashboard_equals_page_numbers(client, member, make_api_key, auth):
    store_events(client.application, member, sample_events())
    key = make_api_key(member)
    params = {"from": "2025-03-02", "to": "2025-03-09", "tz": TZ.key}

    headers = {"Authorization": f"Bearer {key}"}
    response = client.get("/api/v1/analytics/dashboard", query_string=params, headers=headers)
    with client.application.app_context():
        expected = build_dashboard(member["org_id"], parse_query(params, member["org_id"]))

    assert response.status_code == 200
    assert response.get_json() == json.loads(json.dumps(expected))


def test_trends_compare_previous_period(client, member, make_api_key):
    store_events(client.application, member, [{"occurred_at": at(1, 10)}] * 2 + [{"occurred_at": at(3, 10)}] * 5)
    key = make_api_key(member)

    response = client.get(
        "/api/v1/analytics/trends",
        query_string={"from": "2025-03-03", "to": "2025-03-04"},
        headers={"Authorization": f"Bearer {key}"},
    )

    body = response.get_json()
    events = next(item for item in body["figures"] if item["name"] == "events")
    assert body["previous"] == {"from": "2025-03-01", "to": "2025-03-02"}
    assert events["current"] == 5
    assert events["previous"] == 2
    assert events["change"] == 3
    assert events["change_percent"] == 150.0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"range": "12"}, "range"),
        ({"from": "2025-03-10", "to": "2025-03-01"}, "to"),
        ({"from": "yesterday", "to": "2025-03-01"}, "from"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"type": "file_eaten"}, "type"),
        ({"member": "999999"}, "member"),
        ({"from": "2020-01-01", "to": "2025-01-01"}, "from"),
    ],
)
def test_invalid_query_rejected(client, member, make_api_key, params, field):
    key = make_api_key(member)

    headers = {"Authorization": f"Bearer {key}"}
    response = client.get("/api/v1/analytics/dashboard", query_string=params, headers=headers)

    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]


def test_page_renders_charts_and_fragment(client, member, auth):
    store_events(client.application, member, sample_events())
    auth.signin(member["email"])

    page = client.get("/analytics?from=2025-03-01&to=2025-03-14")
    fragment = client.get("/analytics?from=2025-03-01&to=2025-03-07", headers={"HX-Request": "true"})

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "vendor/plotly-4.1.1.min.js" in html
    assert 'id="chart-activity"' in html
    assert "No workflow runs yet." in html or 'id="chart-workflow-runs"' in html
    assert fragment.status_code == 200
    assert "<html" not in fragment.get_data(as_text=True)
    assert 'data-range="2025-03-01/2025-03-07"' in fragment.get_data(as_text=True)


def test_plotly_only_on_chart_pages(client, member, auth):
    auth.signin(member["email"])

    response = client.get("/files")

    assert "plotly" not in response.get_data(as_text=True)


def test_other_org_sees_no_events(client, member, make_user, make_api_key):
    store_events(client.application, member, sample_events())
    other = make_user()
    key = make_api_key(other)

    dashboard = client.get(
        "/api/v1/analytics/dashboard",
        query_string={"from": "2025-03-01", "to": "2025-03-14"},
        headers={"Authorization": f"Bearer {key}"},
    ).get_json()
    exported = client.get(
        "/api/v1/analytics/export",
        query_string={"from": "2025-03-01", "to": "2025-03-14", "format": "ndjson"},
        headers={"Authorization": f"Bearer {key}"},
    )

    assert dashboard["summary"]["events"] == 0
    assert dashboard["top_files"] == []
    assert exported.get_data(as_text=True) == ""


HOSTILE = ['=HYPERLINK("http://example.com","x")', "+SUM(1,1)", "@cmd", "\tindent", "-42.5", "\rreturn"]


def test_csv_export_neutralises_formulas(client, member, make_api_key):
    store_events(
        client.application,
        member,
        [{"occurred_at": at(2, 10, index), "path": text, "tool": "excel"} for index, text in enumerate(HOSTILE)],
    )
    key = make_api_key(member)

    response = client.get(
        "/api/v1/analytics/export",
        query_string={"from": "2025-03-02", "to": "2025-03-02", "format": "csv"},
        headers={"Authorization": f"Bearer {key}"},
    )

    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    paths = [row["path"] for row in rows]
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="floyo-events-2025-03-02-to-2025-03-02.csv"'
    )
    assert paths[0] == '\'=HYPERLINK("http://example.com","x")'
    assert paths[1] == "'+SUM(1,1)"
    assert paths[2] == "'@cmd"
    assert paths[3] == "'\tindent"
    assert paths[4] == "-42.5"
    assert paths[5] == "'\rreturn"
    assert rows[0]["user_email"] == member["email"]


def test_json_exports_keep_raw_strings(client, member, make_api_key):
    store_events(
        client.application,
        member,
        [{"occurred_at": at(2, 10, index), "path": text} for index, text in enumerate(HOSTILE)],
    )
    key = make_api_key(member)
    params = {"from": "2025-03-02", "to": "2025-03-02"}
    headers = {"Authorization": f"Bearer {key}"}

    as_json = client.get("/api/v1/analytics/export", query_string={**params, "format": "json"}, headers=headers)
    json_paths = [item["path"] for item in as_json.get_json()]
    as_ndjson = client.get("/api/v1/analytics/export", query_string={**params, "format": "ndjson"}, headers=headers)

    assert json_paths == HOSTILE
    lines = as_ndjson.get_data(as_text=True).splitlines()
    assert [json.loads(line)["path"] for line in lines] == HOSTILE
    assert as_ndjson.headers["Content-Disposition"].endswith('.ndjson"')


def test_export_streams_in_batches(client, member, make_api_key, monkeypatch):
    from app.analytics import export

    monkeypatch.setattr(export, "BATCH_ROWS", 3)
    store_events(client.application, member, [{"occurred_at": at(2, 10, minute)} for minute in range(10)])
    key = make_api_key(member)

    response = client.get(
        "/api/v1/analytics/export",
        query_string={"from": "2025-03-02", "to": "2025-03-02", "format": "ndjson"},
        headers={"Authorization": f"Bearer {key}"},
    )

    assert response.is_streamed
    times = [json.loads(line)["occurred_at"] for line in response.get_data(as_text=True).splitlines()]
    assert times == sorted(times)
    assert len(times) == 10


def test_export_rejects_unknown_format(client, member, make_api_key):
    key = make_api_key(member)

    response = client.get(
        "/api/v1/analytics/export", query_string={"format": "xlsx"}, headers={"Authorization": f"Bearer {key}"}
    )

    assert response.status_code == 400
    assert "csv, json or ndjson" in response.get_json()["error"]["message"]


def wait_for_file(app, org_id, timeout=30):
    """Return the id of the organization's first file once a job has stored it.

    An rq worker takes a job off the queue a moment before it registers it as started, so an
    empty queue does not yet mean the job has run.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            found = db.session.scalar(db.select(File.id).where(File.org_id == org_id))
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no file was stored for org {org_id} within {timeout} seconds")


def test_export_job_leaves_file(client, member, auth, wait_for_jobs):
    store_events(client.application, member, sample_events())
    auth.signin(member["email"])

    response = client.post("/analytics/export", data={"from": "2025-03-01", "to": "2025-03-14", "format": "csv"})
    wait_for_jobs()
    stored = wait_for_file(client.application, member["org_id"])

    assert response.status_code == 302
    with client.application.app_context():
        stored = db.session.get(File, stored)
        assert stored.name == "floyo-events-2025-03-01-to-2025-03-14.csv"
        assert stored.folder.name == "Exports"
        assert stored.source == "export"
    content = client.get(f"/files/{stored.id}/download").get_data(as_text=True)
    assert len(content.strip().splitlines()) == 71
    status = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'data-state="finished"' in status
    assert f'href="/files/{stored.id}"' in status


def test_export_status_hidden_from_other_org(client, member, make_user, auth, wait_for_jobs):
    store_events(client.application, member, sample_events())
    other = make_user()
    auth.signin(member["email"])
    response = client.post("/analytics/export", data={"from": "2025-03-01", "to": "2025-03-14", "format": "json"})
    wait_for_jobs()
    status_url = response.headers["Location"]
    auth.signout()
    auth.signin(other["email"])

    seen_by_other = client.get(status_url)
    guessed = client.get(status_url.replace(f"-{member['org_id']}-", f"-{other['org_id']}-"))

    assert status_url.startswith("/analytics/exports/")
    assert seen_by_other.status_code == 404
    assert guessed.status_code == 404


def test_range_presets_end_today(app, member):
    now = datetime(2025, 3, 10, 2, 0, tzinfo=UTC)
    with app.app_context():
        query = parse_query({"range": "7", "tz": TZ.key}, member["org_id"], now=now)

    # 02:00 UTC on 10 March is still 9 March in New York.
    assert query.end == date(2025, 3, 9)
    assert query.start == date(2025, 3, 3)
    assert query.start_utc == datetime(2025, 3, 3, 5, 0, tzinfo=UTC)
    assert query.end_utc - query.start_utc == timedelta(days=7, hours=-1)


def dashboard_events(app, org_id, params):
    with app.app_context():
        return build_dashboard(org_id, parse_query(params, org_id))["summary"]["events"]


def test_cached_figures_change_on_ingest(app, member):
    store_events(app, member, sample_events())
    params = {"from": "2025-03-01", "to": "2025-03-14"}
    first = dashboard_events(app, member["org_id"], params)
    # A change to the rollups that no ingest made is not seen: the figures come from the cache.
    with app.app_context():
        for model in (HourlyCount, DailyCount):
            db.session.execute(db.update(model).where(model.org_id == member["org_id"]).values(count=1000))
        db.session.commit()
    cached = dashboard_events(app, member["org_id"], params)

    store_events(app, member, [{"occurred_at": at(2, 12)}])
    after_ingest = dashboard_events(app, member["org_id"], params)

    assert first == 70
    assert cached == 70
    assert after_ingest > 1000


def store_raw_events(app, user, count):
    """Store events without their rollups, as data from before the rollups existed."""
    with app.app_context():
        db.session.add_all(
            Event(
                org_id=user["org_id"],
                user_id=user["id"],
                type="file_opened",
                path=f"notes/{index}.md",
                tool="vim",
                occurred_at=at(4, 10, index),
                source="api",
                meta={},
            )
            for index in range(count)
        )
        db.session.commit()


def test_cli_rebuilds_one_org(app, member, make_user):
    other = make_user()
    store_raw_events(app, member, 6)
    store_raw_events(app, other, 4)

    result = app.test_cli_runner().invoke(args=["floyo", "rebuild-rollups", "--org-id", str(member["org_id"])])

    assert result.exit_code == 0, result.output
    assert f"Organization {member['org_id']}: 6 events" in result.output
    assert dashboard_events(app, member["org_id"], {"from": "2025-03-04", "to": "2025-03-04"}) == 6
    assert dashboard_events(app, other["org_id"], {"from": "2025-03-04", "to": "2025-03-04"}) == 0


def test_cli_rebuilds_all_orgs(app, member, make_user):
    other = make_user()
    store_raw_events(app, member, 6)
    store_raw_events(app, other, 4)

    result = app.test_cli_runner().invoke(args=["floyo", "rebuild-rollups", "--all"])

    assert result.exit_code == 0, result.output
    assert "Rebuilt the rollups of 2 organizations." in result.output
    assert dashboard_events(app, member["org_id"], {"from": "2025-03-04", "to": "2025-03-04"}) == 6
    assert dashboard_events(app, other["org_id"], {"from": "2025-03-04", "to": "2025-03-04"}) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "Give either --org-id N or --all."), (["--org-id", "999999"], "No organization with id 999999.")],
)
def test_cli_rejects_bad_arguments(app, member, args, message):
    result = app.test_cli_runner().invoke(args=["floyo", "rebuild-rollups", *args])

    assert result.exit_code != 0
    assert message in result.output


def test_api_batch_feeds_analytics(client, member, make_api_key, auth, wait_for_jobs):
    key = make_api_key(member)
    headers = {"Authorization": f"Bearer {key}"}
    batch = [
        {"type": "file_modified", "path": "src/app.py", "tool": "vim", "occurred_at": "2025-03-04T10:00:00Z"},
        {"type": "file_opened", "path": "docs/a.md", "tool": "code", "occurred_at": "2025-03-04T11:30:00Z"},
        {"type": "file_opened", "path": "docs/a.md", "tool": "code", "occurred_at": "2025-03-05T09:00:00Z"},
    ]
    stored = client.post("/api/v1/events/batch", json={"events": batch}, headers=headers)
    # A resend of an event with the same event_id is a duplicate and must not be counted twice.
    client.post("/api/v1/events", json={**batch[0], "event_id": "once"}, headers=headers)
    client.post("/api/v1/events", json={**batch[0], "event_id": "once"}, headers=headers)
    # A job adds stored batches to the rollups after the ingest commits.
    wait_for_jobs()
    params = {"from": "2025-03-04", "to": "2025-03-05"}

    dashboard = client.get("/api/v1/analytics/dashboard", query_string=params, headers=headers).get_json()
    auth.signin(member["email"])
    page = client.get("/analytics", query_string=params).get_data(as_text=True)

    assert stored.status_code == 200
    assert dashboard["summary"]["events"] == 4
    assert dashboard["summary"]["active_members"] == 1
    assert {item["path"]: item["count"] for item in dashboard["top_files"]} == {"src/app.py": 2, "docs/a.md": 2}
    assert {item["name"]: item["count"] for item in dashboard["top_tools"]} == {"vim": 2, "code": 2}
    assert dashboard["top_members"] == [{"user_id": member["id"], "email": member["email"], "count": 4}]
    assert dashboard["sessions"]["total"] == 3
    assert '<td class="path">docs/a.md</td><td>2</td>' in page


def test_git_import_feeds_analytics(app, client, member, make_api_key, shared_data, wait_for_jobs):
    log_path = shared_data / "flask-gitlog.txt"
    result = app.test_cli_runner().invoke(args=["floyo", "import-git", str(log_path), "--email", member["email"]])
    # With real workers the command returns before the rollup job has added the events.
    wait_for_jobs()
    with app.app_context():
        first, last, total = db.session.execute(
            db.select(db.func.min(Event.occurred_at), db.func.max(Event.occurred_at), db.func.count(Event.id)).where(
                Event.org_id == member["org_id"]
            )
        ).one()
        commits = db.session.scalar(
            db.select(db.func.count(db.distinct(Event.session))).where(Event.org_id == member["org_id"])
        )
    key = make_api_key(member)

    # The widest range the API allows (366 days) ending on the last commit's day.
    to = last.astimezone(UTC).date()
    first_day = to - timedelta(days=365)
    dashboard = client.get(
        "/api/v1/analytics/dashboard",
        query_string={"from": first_day.isoformat(), "to": to.isoformat()},
        headers={"Authorization": f"Bearer {key}"},
    ).get_json()
    with app.app_context():
        in_range = db.session.scalar(
            db.select(db.func.count(Event.id)).where(
                Event.org_id == member["org_id"],
                Event.occurred_at >= datetime.combine(first_day, datetime.min.time(), UTC),
            )
        )
        sessions_in_range = db.session.scalar(
            db.select(db.func.count(db.distinct(Event.session))).where(
                Event.org_id == member["org_id"],
                Event.occurred_at >= datetime.combine(first_day, datetime.min.time(), UTC),
            )
        )

    assert result.exit_code == 0, result.output
    assert total > 0
    assert commits > 0
    assert 0 < in_range < total
    assert dashboard["summary"]["events"] == in_range
    assert dashboard["summary"]["sessions"] == sessions_in_range


def rollup_sums(app, org_id):
    """Sum the hourly rollups into the keys of the smaller ones, and read the smaller ones."""
    with app.app_context():
        hourly = db.session.scalars(db.select(HourlyCount).where(HourlyCount.org_id == org_id)).all()
        path_hourly = db.session.scalars(db.select(PathHourlyCount).where(PathHourlyCount.org_id == org_id)).all()
        expected_daily = Counter()
        expected_type_hourly = Counter()
        for row in hourly:
            expected_daily[(row.hour_start.replace(hour=0), row.user_id, row.type, row.tool, row.ext)] += row.count
            expected_type_hourly[(row.hour_start, row.type)] += row.count
        expected_path_daily = Counter()
        for row in path_hourly:
            expected_path_daily[(row.hour_start.replace(hour=0), row.path)] += row.count

        daily = {
            (row.day_start, row.user_id, row.type, row.tool, row.ext): row.count
            for row in db.session.scalars(db.select(DailyCount).where(DailyCount.org_id == org_id))
        }
        type_hourly = {
            (row.hour_start, row.type): row.count
            for row in db.session.scalars(db.select(TypeHourlyCount).where(TypeHourlyCount.org_id == org_id))
        }
        path_daily = {
            (row.day_start, row.path): row.count
            for row in db.session.scalars(db.select(PathDailyCount).where(PathDailyCount.org_id == org_id))
        }
    return (dict(expected_daily), dict(expected_type_hourly), dict(expected_path_daily)), (
        daily,
        type_hourly,
        path_daily,
    )


def test_daily_rollups_sum_hourly(app, member):
    store_events(app, member, sample_events())
    store_events(app, member, sample_events()[:20])

    expected, stored = rollup_sums(app, member["org_id"])

    assert stored[0] == expected[0]
    assert stored[1] == expected[1]
    assert stored[2] == expected[2]
    assert sum(stored[0].values()) == 90


def test_rebuild_refills_daily_rollups(app, member):
    store_events(app, member, sample_events())
    with app.app_context():
        db.session.execute(db.update(DailyCount).values(count=1000))
        db.session.execute(db.delete(TypeHourlyCount))
        db.session.execute(db.delete(PathDailyCount))
        rebuild_rollups(member["org_id"])
        db.session.commit()

    expected, stored = rollup_sums(app, member["org_id"])

    assert stored[0] == expected[0]
    assert stored[1] == expected[1]
    assert stored[2] == expected[2]
    assert sum(stored[0].values()) == 70


def load_migration(name_prefix):
    [path] = (Path(__file__).resolve().parent.parent / "migrations" / "versions").glob(f"{name_prefix}_*.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_fills_daily_rollups(app, member):
    """The migration that adds the daily rollups fills them from the hourly rollups already stored."""
    store_events(app, member, sample_events())
    migration = load_migration("592890bf6f22")
    with app.app_context():
        for model in (DailyCount, TypeHourlyCount, PathDailyCount):
            db.session.execute(db.delete(model))
        migration.fill_from_hourly(db.session.connection())
        db.session.commit()

    expected, stored = rollup_sums(app, member["org_id"])

    assert stored[0] == expected[0]
    assert stored[1] == expected[1]
    assert stored[2] == expected[2]
    assert sum(stored[2].values()) == 70


def test_filtered_dashboard_in_zone_matches_raw(app, member, make_user):
    """Filters and a zone with an offset read whole UTC days and the hours at both ends; counts stay exact."""
    store_events(app, member, sample_events())
    other = make_user()
    with app.app_context():
        db.session.add(Membership(org_id=member["org_id"], user_id=other["id"], role="member"))
        db.session.commit()
    store_events(app, {**other, "org_id": member["org_id"]}, sample_events()[:30])
    start, end = date(2025, 3, 2), date(2025, 3, 12)

    with app.app_context():
        params = {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "tz": TZ.key,
            "tool": "vim",
            "member": str(other["id"]),
        }
        dashboard = build_dashboard(member["org_id"], parse_query(params, member["org_id"]))
        unfiltered = build_dashboard(
            member["org_id"], parse_query({**params, "tool": "", "member": ""}, member["org_id"])
        )
        events = db.session.scalars(db.select(Event).where(Event.org_id == member["org_id"])).all()
        in_range = [event for event in events if start <= event.occurred_at.astimezone(TZ).date() <= end]

    chosen = [event for event in in_range if event.tool == "vim" and event.user_id == other["id"]]
    assert dashboard["summary"]["events"] == len(chosen)
    assert dashboard["summary"]["active_members"] == 1
    assert {item["path"]: item["count"] for item in dashboard["top_files"]} == dict(
        Counter(event.path for event in chosen).most_common(10)
    )
    assert unfiltered["summary"]["events"] == len(in_range)
    assert unfiltered["summary"]["active_members"] == 2
    assert {item["name"]: item["count"] for item in unfiltered["top_file_types"]} == dict(
        Counter(extension_of(event.path) for event in in_range)
    )


def test_page_without_events_shows_empty_state(client, member, auth):
    auth.signin(member["email"])

    response = client.get("/analytics")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "No activity yet" in html
    assert 'href="/events/import' in html
    assert "POST /api/v1/events" in html
    assert 'href="/api/v1/openapi.json"' in html
    assert 'href="/settings"' in html
    assert 'class="chart"' not in html
    assert "data-figure='" not in html


def test_empty_range_says_no_events_in_range(client, member, auth):
    store_events(client.application, member, sample_events())
    auth.signin(member["email"])

    response = client.get("/analytics?from=2024-01-01&to=2024-01-31")
    with_events = client.get("/analytics?from=2025-03-01&to=2025-03-14")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "No events in this range" in html
    assert "No activity yet" not in html
    assert 'class="chart"' not in html
    assert 'id="analytics-empty"' not in with_events.get_data(as_text=True)
    assert 'id="chart-activity"' in with_events.get_data(as_text=True)


@pytest.mark.parametrize("prefix", ["docs/", "docs/report-1", "src/module4", "src/module_", "src/"])
def test_path_prefix_dashboard_matches_raw(app, member, prefix):
    """A path prefix reads every figure from the hourly path rollup (one grouped scan on PostgreSQL)."""
    store_events(app, member, sample_events())
    start, end = date(2025, 3, 2), date(2025, 3, 12)

    with app.app_context():
        params = {"from": start.isoformat(), "to": end.isoformat(), "tz": TZ.key, "path": prefix}
        dashboard = build_dashboard(member["org_id"], parse_query(params, member["org_id"]))
        events = db.session.scalars(db.select(Event).where(Event.org_id == member["org_id"])).all()

    chosen = [
        event
        for event in events
        if event.path.startswith(prefix) and start <= event.occurred_at.astimezone(TZ).date() <= end
    ]
    activity = dashboard["activity"]
    from_rollups = Counter()
    for series in activity["series"]:
        for period, count in zip(activity["periods"], series["counts"], strict=True):
            if count:
                from_rollups[(period, series["type"])] = count
    by_path = sorted(Counter(event.path for event in chosen).items(), key=lambda item: (-item[1], item[0]))
    heatmap = dashboard["heatmap"]["counts"]
    heat = Counter(
        (event.occurred_at.astimezone(TZ).weekday(), event.occurred_at.astimezone(TZ).hour) for event in chosen
    )
    assert dashboard["summary"]["events"] == len(chosen)
    assert dashboard["summary"]["active_members"] == (1 if chosen else 0)
    assert from_rollups == Counter(
        (event.occurred_at.astimezone(TZ).date().isoformat(), event.type) for event in chosen
    )
    assert {(w, h): heatmap[w][h] for w in range(7) for h in range(24) if heatmap[w][h]} == dict(heat)
    assert dashboard["top_files"] == [{"path": path, "count": count} for path, count in by_path[:10]]
    assert {item["name"]: item["count"] for item in dashboard["top_tools"]} == dict(Counter(e.tool for e in chosen))
    assert {item["name"]: item["count"] for item in dashboard["types"]} == dict(Counter(e.type for e in chosen))


def events_shown(html):
    """Return the events figure of the page's headline stats."""
    match = re.search(r'data-figure-name="events">\s*<strong>(\d+)</strong>', html)
    assert match, "the page shows no events figure"
    return int(match.group(1))


def send_recent_events(client, key, count):
    """Send `count` events of the last hours through the API, as the agent does."""
    now = datetime.now(UTC)
    batch = [
        {
            "type": "file_modified",
            "path": f"src/recent_{index}.py",
            "tool": "vim",
            "occurred_at": (now - timedelta(minutes=5 + index)).isoformat(),
        }
        for index in range(count)
    ]
    response = client.post("/api/v1/events/batch", json={"events": batch}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.get_data(as_text=True)


def finish_rollup_jobs(app, org_id, wait_for_jobs):
    """Wait for the queued jobs, among them the rollup job that warms the preset pages."""
    wait_for_jobs()


@pytest.fixture
def figure_computations(monkeypatch):
    """Count the pages whose figures this process computes from the rollups instead of the cache."""
    computed = []
    compute = service._compute_event_figures

    def counting(org_id, query, top_n):
        computed.append((query.range, query.tz.key))
        return compute(org_id, query, top_n)

    monkeypatch.setattr(service, "_compute_event_figures", counting)
    return computed


def test_rollup_job_caches_preset_pages(client, member, make_api_key, auth, wait_for_jobs, figure_computations):
    key = make_api_key(member)
    auth.signin(member["email"])
    send_recent_events(client, key, 3)
    finish_rollup_jobs(client.application, member["org_id"], wait_for_jobs)
    figure_computations.clear()

    pages = {preset: client.get("/analytics", query_string={"range": preset}) for preset in ("7", "30", "90")}
    custom = client.get("/analytics", query_string={"range": "custom", "from": "2025-01-01", "to": "2025-01-31"})

    for preset, response in pages.items():
        assert response.status_code == 200, preset
        assert events_shown(response.get_data(as_text=True)) == 3, preset
    assert figure_computations == [("custom", "UTC")]
    assert events_shown(custom.get_data(as_text=True)) == 0


def test_rollup_job_caches_recent_zone(client, member, make_api_key, auth, wait_for_jobs, figure_computations):
    key = make_api_key(member)
    auth.signin(member["email"])
    send_recent_events(client, key, 2)
    finish_rollup_jobs(client.application, member["org_id"], wait_for_jobs)
    before = client.get("/analytics", query_string={"range": "7", "tz": "Asia/Tokyo"})
    send_recent_events(client, key, 3)
    finish_rollup_jobs(client.application, member["org_id"], wait_for_jobs)
    figure_computations.clear()

    after = client.get("/analytics", query_string={"range": "7", "tz": "Asia/Tokyo"})

    assert events_shown(before.get_data(as_text=True)) == 2
    # The ingest changed the rollup version: the page shows the new events, computed by the job.
    assert events_shown(after.get_data(as_text=True)) == 5
    assert figure_computations == []


def test_warm_presets_limits_zones(app, member):
    store_events(app, member, sample_events())
    app.config["ANALYTICS_WARM_ZONES"] = 1

    with app.app_context():
        for zone in ("Europe/Berlin", "Asia/Tokyo", "Not/AZone"):
            remember_zone(member["org_id"], zone)
        newest_unknown = service.warm_presets(member["org_id"])
        remember_zone(member["org_id"], "Asia/Tokyo")
        newest_known = service.warm_presets(member["org_id"])

    # UTC and the newest recorded zone; a zone this server does not know is skipped.
    assert newest_unknown == 3
    assert newest_known == 6


def test_warm_presets_without_events(app, member):
    with app.app_context():
        assert service.warm_presets(member["org_id"]) == 0


def test_rollup_job_leaves_warm_up_to_queued_job(app, member, monkeypatch):
    """When another batch queued the next rollup job during this one, only the next job warms the pages."""
    from app.analytics import jobs, rollups
    from app.queue import get_queues

    store_events(app, member, sample_events())
    warmed = []
    monkeypatch.setattr(service, "warm_presets", lambda org_id: warmed.append(org_id) or 0)

    def apply_while_batch_arrives(org_id):
        get_queues().connection.set(rollups.QUEUED_KEY.format(org_id=org_id), 1)
        return 5

    with app.app_context():
        monkeypatch.setattr(rollups, "apply_pending", apply_while_batch_arrives)
        jobs.apply_pending_rollups_job(member["org_id"])
        monkeypatch.setattr(rollups, "apply_pending", lambda org_id: 5)
        get_queues().connection.delete(rollups.QUEUED_KEY.format(org_id=member["org_id"]))
        jobs.apply_pending_rollups_job(member["org_id"])

    assert warmed == [member["org_id"]]


def test_count_axes_start_at_zero():
    from app.analytics import charts

    zeros = {"accepted": 0, "dismissed": 0, "open": 0}
    runs = {"available": True, "periods": ["2026-12-01"], "succeeded": [0], "other": [0]}
    figures = charts.build_live_figures(runs, zeros)

    for name in ("suggestions", "workflow_runs"):
        assert figures[name]["layout"]["yaxis"]["rangemode"] == "tozero", name
        assert figures[name]["layout"]["xaxis"]["automargin"] is True, name
    assert figures["workflow_runs"]["layout"]["xaxis"]["type"] == "category"
