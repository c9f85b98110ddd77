"""The analysis: sessions, each kind of pattern, suggestions, and run_analysis on the database."""

import ast
import collections
import itertools
import json
import logging
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.events import gitimport
from app.events.models import Event
from app.events.service import insert_events
from app.extensions import db
from app.insights import analysis, service
from app.insights.analysis import AnalysisSettings, build_sessions
from app.insights.models import AnalysisState, Pattern, Suggestion
from app.insights.suggestions import SuggestionContext, build_suggestion

# A Tuesday.
START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
STEP_KEYS = {"id", "type", "depends_on", "config", "timeout_seconds", "retries", "on_failure"}


def event(path, at, session=None, user=1, type="file_modified", tool="editor"):
    """An event row in the shape SessionBuilder takes."""
    return (user, session, at, type, path, tool)


def commit_rows(log_path):
    rows = []
    with open(log_path, encoding="utf-8") as log:
        for commit in gitimport.iter_commits(log):
            for change in commit.changes.values():
                rows.append(event(change.path, commit.date, session=commit.hash, user=None, type=change.type))
    return rows


def code_maat_pairs(rows, max_files=30, min_revs=5, min_shared=5, min_degree=30):
    """code-maat's coupling, written out plainly with sets and counters, as the reference."""
    commits = collections.defaultdict(set)
    for _, session, _, _, path, _ in rows:
        commits[session].add(path)
    revs = collections.Counter()
    shared = collections.Counter()
    for files in commits.values():
        if len(files) > max_files:
            continue
        revs.update(files)
        shared.update(itertools.combinations(sorted(files), 2))
    pairs = {}
    for (a, b), count in shared.items():
        mean = (revs[a] + revs[b]) / 2
        degree = 100 * count / mean
        if mean >= min_revs and count >= min_shared and degree >= min_degree:
            pairs[(a, b)] = (count, degree)
    return pairs


# Sessions


def test_sessions_split_at_gaps_per_user():
    rows = [
        event("a.py", START),
        event("b.py", START + timedelta(minutes=29)),
        event("c.py", START + timedelta(minutes=61)),
        event("d.py", START + timedelta(minutes=5), user=2),
    ]

    data = build_sessions(rows, gap_minutes=30)

    assert session_paths(data) == [["a.py", "b.py"], ["c.py"], ["d.py"]]


def test_sessions_group_by_session_value_across_gaps():
    rows = [
        event("a.py", START, session="abc"),
        event("b.py", START + timedelta(days=2), session="abc"),
        event("c.py", START + timedelta(minutes=1), session="def"),
    ]

    data = build_sessions(rows, gap_minutes=30)

    assert session_paths(data) == [["a.py", "b.py"], ["c.py"]]


def session_paths(data):
    sessions = [
        sorted(data.paths[index] for index in data.path_ids[start:end])
        for start, end in zip(data.offsets[:-1], data.offsets[1:], strict=True)
    ]
    return sorted(sessions)


# Co-used files


def test_co_used_flask_log_matches_code_maat(shared_data):
    rows = commit_rows(shared_data / "flask-gitlog.txt")

    found = analysis.find_co_used(build_sessions(rows))

    expected = code_maat_pairs(rows)
    assert len(expected) == 88
    assert {pattern.identity for pattern in found} == set(expected)
    for pattern in found:
        count, degree = expected[pattern.identity]
        assert pattern.data["shared_sessions"] == count
        assert pattern.data["degree"] == round(degree, 1)
    assert found[0].data["files"] == ["requirements/tests-pallets-min.in", "requirements/tests-pallets-min.txt"]
    assert (found[0].data["shared_sessions"], found[0].data["degree"]) == (12, 96.0)
    assert found[1].data["files"] == ["docs/_static/flask.png", "docs/_static/logo-full.png"]
    assert (found[1].data["shared_sessions"], found[1].data["degree"]) == (5, 90.9)


def test_co_used_leaves_out_large_sessions():
    rows = []
    for index in range(5):
        rows += [event("a.py", START, session=f"s{index}"), event("b.py", START, session=f"s{index}")]
    # Five more sessions with a and b among 31 files: they would make the pair 100 % coupled.
    for index in range(5):
        rows += [event(f"f{n}.py", START, session=f"big{index}") for n in range(29)]
        rows += [event("a.py", START, session=f"big{index}"), event("b.py", START, session=f"big{index}")]
    rows += [event("a.py", START, session=f"alone{index}") for index in range(5)]

    [pattern] = analysis.find_co_used(build_sessions(rows))

    assert pattern.data["file_sessions"] == [10, 5]
    assert pattern.data["shared_sessions"] == 5
    assert pattern.data["degree"] == 66.7


def test_co_used_thresholds():
    rows = []
    for index in range(4):
        rows += [event("a.py", START, session=f"s{index}"), event("b.py", START, session=f"s{index}")]

    assert analysis.find_co_used(build_sessions(rows)) == []
    [pattern] = analysis.find_co_used(build_sessions(rows), min_revs=4, min_shared=4)
    assert pattern.data["confidence"] == 1.0
    assert pattern.data["lift"] == 1.0


# Sequences


def brute_force_sequences(data, min_support, max_length, max_gap):
    """Every sequence and its support by enumerating each session's step combinations."""
    counts = collections.Counter()
    for start, end in zip(data.offsets[:-1], data.offsets[1:], strict=True):
        steps = []
        for index in range(start, end):
            path, time = data.path_ids[index], data.times[index]
            if steps and steps[-1][0] == path:
                steps[-1][2] = time
            else:
                steps.append([path, time, time])
        found = set()

        def walk(chosen, steps=steps, found=found):
            if chosen:
                found.add(tuple(steps[index][0] for index in chosen))
            if len(chosen) == max_length:
                return
            for index in range(chosen[-1] + 1 if chosen else 0, len(steps)):
                if chosen:
                    gap = steps[index][1] - steps[chosen[-1]][2]
                    if gap <= 0 or (max_gap is not None and gap > max_gap):
                        continue
                walk([*chosen, index])

        walk([])
        counts.update(found)
    return {pattern: count for pattern, count in counts.items() if count >= min_support}


@pytest.mark.parametrize("max_gap", [None, 300])
def test_sequence_supports_match_brute_force(max_gap):
    generator = random.Random(42)
    rows = []
    for session in range(150):
        at = START + timedelta(days=session)
        for _ in range(generator.randint(1, 9)):
            at += timedelta(seconds=generator.choice([0, 30, 120, 400]))
            rows.append(event(f"f{min(int(generator.expovariate(0.4)), 9)}.py", at, session=f"s{session}"))
    data = build_sessions(rows)
    positions = analysis.sequence_mining.Positions(data.path_ids, data.times, data.offsets, max_gap)

    mined, threshold = analysis.sequence_mining.mine_frequent(positions, 6, 4)

    assert threshold == 6
    assert mined == brute_force_sequences(data, 6, 4, max_gap)


def test_sequences_collapse_repeats_and_keep_closed_ones():
    rows = []
    for session in range(4):
        at = START + timedelta(days=session)
        for offset, path in enumerate(["data.csv", "data.csv", "clean.py", "report.md"]):
            rows.append(event(path, at + timedelta(minutes=2 * offset), session=f"s{session}"))

    found, support = analysis.find_sequences(build_sessions(rows), min_support=3)

    assert support == 3
    [pattern] = found
    assert pattern.data["steps"] == ["data.csv", "clean.py", "report.md"]
    assert pattern.data["support"] == 4
    # data.csv ends at minute 2; report.md starts at minute 6: 4 minutes over 2 gaps.
    assert pattern.data["median_gap_seconds"] == 120.0


def test_sequences_need_later_steps_within_the_gap():
    rows = []
    for session in range(5):
        at = START + timedelta(days=session)
        # One instant, as in a git commit: no order.
        rows += [event("a.py", at, session=f"s{session}"), event("b.py", at, session=f"s{session}")]
        # Too far apart for a 10-minute gap.
        rows += [event("c.py", at + timedelta(minutes=1), session=f"s{session}")]
        rows += [event("d.py", at + timedelta(minutes=30), session=f"s{session}")]

    found, _ = analysis.find_sequences(build_sessions(rows), min_support=3, max_gap_minutes=10)

    assert {tuple(pattern.data["steps"]) for pattern in found} == {("a.py", "c.py"), ("b.py", "c.py")}


def test_sequence_threshold_rises_when_too_many(monkeypatch):
    monkeypatch.setattr(analysis.sequence_mining, "MAX_FREQUENT_SEQUENCES", 10)
    rows = []
    for session in range(20):
        at = START + timedelta(days=session)
        for offset in range(6 if session < 10 else 3):
            rows.append(event(f"f{offset}.py", at + timedelta(seconds=offset), session=f"s{session}"))

    found, support = analysis.find_sequences(build_sessions(rows), min_support=3)

    assert support == 11
    assert [pattern.data["steps"] for pattern in found] == [["f0.py", "f1.py", "f2.py"]]
    assert found[0].data["support"] == 20


# Recurrence


def test_recurrence_on_weekday_and_hour():
    rows = []
    for week in range(4):
        tuesday = START + timedelta(weeks=week, minutes=week * 7)
        rows.append(event("reports/weekly.md", tuesday, session=f"w{week}"))
        # Used on other days too, but less than half of its days.
        rows.append(event("notes.txt", tuesday + timedelta(days=week % 3), session=f"n{week}"))

    found = analysis.find_recurrence(build_sessions(rows), min_weeks=3)

    [pattern] = [pattern for pattern in found if pattern.data.get("path") == "reports/weekly.md"]
    assert pattern.data["weekday_name"] == "Tuesday"
    assert pattern.data["hour"] == 9
    assert pattern.data["when"] == "Tuesdays around 09:00 UTC"
    assert pattern.data["cron"] == "0 9 * * 2"
    assert pattern.data["weeks"] == 4
    assert pattern.data["first_week"] == "2025-03-03"


def test_recurrence_needs_most_days_in_the_slot():
    rows = [event("daily.md", START + timedelta(days=day, hours=day % 5), session=f"d{day}") for day in range(28)]

    found = analysis.find_recurrence(build_sessions(rows), min_weeks=3)

    assert found == []


def test_recurrence_of_sequences():
    rows = []
    for week in range(3):
        at = START + timedelta(weeks=week)
        rows += [event("a.csv", at, session=f"w{week}"), event("b.py", at + timedelta(minutes=1), session=f"w{week}")]
    data = build_sessions(rows)
    sequences, _ = analysis.find_sequences(data, min_support=3)

    found = analysis.find_recurrence(data, sequences, min_weeks=3)

    assert ("sequence", "a.csv", "b.py", "weekday=1", "hour=9") in {pattern.identity for pattern in found}


# Produced files


def test_produced_files_exact_and_by_glob():
    rows = []
    for session in range(4):
        at = START + timedelta(days=session)
        rows.append(event("build.py", at, session=f"s{session}", type="command_executed", tool="python"))
        rows.append(event("dist/report.pdf", at + timedelta(seconds=20), session=f"s{session}", type="file_created"))
        rows.append(
            event(f"logs/run-{session}.log", at + timedelta(seconds=5), session=f"s{session}", type="file_created")
        )
        # Created before the command ran: not its product.
        rows.append(event("draft.txt", at - timedelta(seconds=5), session=f"s{session}", type="file_created"))

    found = analysis.find_produced(build_sessions(rows), min_sessions=3)

    by_product = {pattern.data["product"]: pattern.data for pattern in found}
    assert set(by_product) == {"dist/report.pdf", "logs/*.log"}
    assert by_product["dist/report.pdf"]["sessions"] == 4
    assert by_product["dist/report.pdf"]["median_delay_seconds"] == 20.0
    assert by_product["dist/report.pdf"]["command_event_type"] == "command_executed"
    assert by_product["logs/*.log"]["match"] == "glob"
    assert by_product["logs/*.log"]["examples"][0] == "logs/run-0.log"


# Frequent files, types and tools


def test_frequent_counts_recent_uses():
    now = START + timedelta(days=40)
    rows = [
        event("a.py", now - timedelta(days=1)),
        event("a.py", now - timedelta(days=10), tool="vim"),
        event("a.py", now - timedelta(days=35)),
        event("b.md", now - timedelta(days=2)),
    ]

    found = analysis.find_frequent(build_sessions(rows), now.timestamp(), top_n=10)

    by_kind = collections.defaultdict(dict)
    for pattern in found:
        by_kind[pattern.kind][pattern.identity[0]] = pattern.data
    assert by_kind["frequent_file"]["a.py"]["events"] == 3
    assert by_kind["frequent_file"]["a.py"]["events_7d"] == 1
    assert by_kind["frequent_file"]["a.py"]["events_30d"] == 2
    assert by_kind["frequent_file"]["a.py"]["last_used_at"] == "2025-04-12T09:00:00Z"
    assert by_kind["frequent_type"][".py"]["files"] == 1
    assert set(by_kind["frequent_tool"]) == {"editor", "vim"}


# Suggestions


def workday_rows(weeks=4):
    """Tuesday sessions: edit data, clean it, run build.py, which creates dist/report.pdf."""
    rows = []
    for week in range(weeks):
        at = START + timedelta(weeks=week)
        rows += [
            event("data/sales.csv", at),
            event("scripts/clean.py", at + timedelta(minutes=2)),
            event("build.py", at + timedelta(minutes=3), type="command_executed", tool="python"),
            event("dist/report.pdf", at + timedelta(minutes=4), type="file_created"),
            event("notes/summary.md", at + timedelta(minutes=6)),
        ]
    return rows


def suggestions_by_kind(rows):
    result = analysis.analyze(build_sessions(rows), AnalysisSettings(coupling_min_revs=3, coupling_min_shared=3), START)
    context = SuggestionContext(months_observed=1.0, notify_to="owner@example.com")
    made = collections.defaultdict(list)
    for pattern in result.patterns:
        suggestion = build_suggestion(pattern.kind, pattern.data, context)
        if suggestion is not None:
            made[pattern.kind].append((pattern, suggestion))
    return made


def test_suggestions_for_each_kind_have_drafts_and_code():
    made = suggestions_by_kind(workday_rows())

    assert set(made) == {"co_used", "sequence", "recurrence", "produced"}
    for kind, items in made.items():
        for _, suggestion in items:
            ast.parse(suggestion["sample_code"])
            json.dumps(suggestion["evidence"])
            draft = suggestion["workflow_draft"]
            assert draft["trigger"]["type"] in ("event_match", "schedule"), kind
            assert draft["steps"], kind
            for step in draft["steps"]:
                assert set(step) == STEP_KEYS, kind
                assert set(step["depends_on"]) <= {other["id"] for other in draft["steps"]}, kind
            assert suggestion["minutes_saved_per_month"] > 0, kind


def test_suggestion_time_saved_formula():
    made = suggestions_by_kind(workday_rows())

    [(pattern, suggestion)] = [item for item in made["produced"] if item[0].data["product"] == "dist/report.pdf"]
    # 4 sessions over 1 month, 1.5 minutes each.
    assert suggestion["minutes_saved_per_month"] == 6.0
    assert suggestion["evidence"]["occurrences_per_month"] == 4.0
    assert suggestion["score"] == 6.0 * pattern.data["share"]


def run_script(code, folder):
    script = folder / "suggested.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=30, check=False
    )


def test_produced_sample_code_runs_the_command(tmp_path):
    made = suggestions_by_kind(workday_rows())
    [(_, suggestion)] = [item for item in made["produced"] if item[0].data["product"] == "dist/report.pdf"]
    (tmp_path / "build.py").write_text(
        "from pathlib import Path\nPath('dist').mkdir(exist_ok=True)\nPath('dist/report.pdf').write_text('pdf')\n"
    )

    completed = run_script(suggestion["sample_code"], tmp_path)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "produced: dist/report.pdf"
    assert (tmp_path / "dist" / "report.pdf").read_text() == "pdf"


def test_co_used_sample_code_finds_a_file_out_of_step(tmp_path):
    made = suggestions_by_kind(workday_rows())
    pattern, suggestion = next(
        item for item in made["co_used"] if item[0].data["files"] == ["data/sales.csv", "scripts/clean.py"]
    )
    for name in pattern.data["files"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    os.utime(tmp_path / "scripts/clean.py", (1_700_000_000, 1_700_000_000))

    completed = run_script(suggestion["sample_code"], tmp_path)

    assert completed.returncode == 1, completed.stderr
    assert "Check scripts/clean.py" in completed.stdout


def test_sequence_sample_code_prints_next_steps(tmp_path):
    made = suggestions_by_kind(workday_rows())
    pattern, suggestion = made["sequence"][0]
    first = tmp_path / pattern.data["steps"][0]
    first.parent.mkdir(parents=True, exist_ok=True)
    first.write_text("x")

    completed = run_script(suggestion["sample_code"], tmp_path)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{pattern.data['steps'][0]} changed last; next: {pattern.data['steps'][1]}")


def test_recurrence_sample_code_reports_a_due_file(tmp_path):
    made = suggestions_by_kind(workday_rows())
    pattern, suggestion = next(item for item in made["recurrence"] if item[0].data.get("path") == "data/sales.csv")

    due = run_script(suggestion["sample_code"], tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/sales.csv").write_text("x")
    done = run_script(suggestion["sample_code"], tmp_path)

    assert due.returncode == 1, due.stderr
    assert "data/sales.csv is due" in due.stdout
    assert done.returncode == 0, done.stderr
    assert "done for this time" in done.stdout


def test_sample_code_survives_awkward_paths():
    rows = [
        (user, session, at, type_, 'we"""ird\\path {x}.csv' if path == "data/sales.csv" else path, tool)
        for user, session, at, type_, path, tool in workday_rows()
    ]

    made = suggestions_by_kind(rows)

    for items in made.values():
        for _, suggestion in items:
            ast.parse(suggestion["sample_code"])


# run_analysis on the database


def store_rows(app, user, rows):
    """Store rows through insert_events, as the API and importers do, and commit."""
    with app.app_context():
        events = [
            {"type": type_, "path": path, "tool": tool, "occurred_at": at, "session": session, "metadata": {}}
            for _, session, at, type_, path, tool in rows
        ]
        for start in range(0, len(events), 2000):
            insert_events(user["org_id"], user["id"], "api", events[start : start + 2000])
        db.session.commit()


def wait_for_analysis(app, org_id, wait_for_jobs, timeout=120):
    """Wait until the analysis that storing events requested has run.

    An empty queue alone is not enough: a worker may have taken the job without having started it.
    """
    wait_for_jobs(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            state = db.session.get(AnalysisState, org_id)
            if state is not None and not state.queued and state.status in ("succeeded", "failed"):
                return state.status
        time.sleep(0.05)
    raise AssertionError(f"the analysis of organization {org_id} did not finish within {timeout} seconds")


def test_flask_log_through_the_pipeline(app, client, make_user, make_api_key, wait_for_jobs, shared_data):
    user = make_user()
    key = make_api_key(user)
    store_rows(app, user, commit_rows(shared_data / "flask-gitlog.txt"))
    # Storing the events requested an analysis; its job runs on the worker.
    assert wait_for_analysis(app, user["org_id"], wait_for_jobs) == "succeeded"

    pairs = []
    cursor = None
    while True:
        url = "/api/v1/patterns?kind=co_used&limit=50" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers={"Authorization": f"Bearer {key}"}).get_json()
        pairs += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(pairs) == 88
    assert len({pair["id"] for pair in pairs}) == 88
    assert [pairs[0]["files"], pairs[0]["shared_sessions"], pairs[0]["degree"]] == [
        ["requirements/tests-pallets-min.in", "requirements/tests-pallets-min.txt"],
        12,
        96.0,
    ]
    assert [pairs[1]["files"], pairs[1]["shared_sessions"], pairs[1]["degree"]] == [
        ["docs/_static/flask.png", "docs/_static/logo-full.png"],
        5,
        90.9,
    ]
    with app.app_context():
        state = db.session.get(AnalysisState, user["org_id"])
        assert state.status == "succeeded"
        assert state.queued is False
        assert state.events_analyzed == 9418
        assert state.sessions_analyzed == 3805
        stored = db.session.scalar(
            db.select(db.func.count())
            .select_from(Pattern)
            .where(Pattern.org_id == user["org_id"], Pattern.kind == "co_used")
        )
        assert stored == 88


def test_reanalysis_updates_in_place(app, make_user, wait_for_jobs):
    user = make_user()
    store_rows(app, user, workday_rows())
    wait_for_analysis(app, user["org_id"], wait_for_jobs)

    with app.app_context():
        first_patterns = dict(db.session.execute(db.select(Pattern.key, Pattern.id)).all())
        first_suggestions = dict(db.session.execute(db.select(Suggestion.pattern_id, Suggestion.id)).all())
        summary = service.run_analysis(user["org_id"])
        second_patterns = dict(db.session.execute(db.select(Pattern.key, Pattern.id)).all())
        second_suggestions = dict(db.session.execute(db.select(Suggestion.pattern_id, Suggestion.id)).all())

    assert summary.no_longer_found == 0
    assert {"sequence", "recurrence", "produced"} <= set(summary.patterns_by_kind)
    assert first_patterns == second_patterns
    assert first_suggestions == second_suggestions
    assert len(second_suggestions) == summary.suggestions


def test_decisions_survive_reanalysis_and_lost_patterns_turn_stale(app, make_user, wait_for_jobs):
    user = make_user()
    store_rows(app, user, workday_rows())
    wait_for_analysis(app, user["org_id"], wait_for_jobs)
    with app.app_context():
        produced = db.session.scalar(db.select(Suggestion).where(Suggestion.kind == "produced"))
        service.accept_suggestion(user["org_id"], produced.id, user["id"])
        db.session.commit()
        produced_id, pattern_id = produced.id, produced.pattern_id
        # The commands disappear, so the next analysis no longer finds what they produce.
        db.session.execute(db.delete(Event).where(Event.type == "command_executed"))
        db.session.commit()

        summary = service.run_analysis(user["org_id"])

        suggestion = db.session.get(Suggestion, produced_id)
        assert summary.no_longer_found >= 1
        assert suggestion.status == "accepted"
        assert suggestion.decided_by_id == user["id"]
        assert suggestion.decided_at is not None
        assert db.session.get(Pattern, pattern_id).current is False
        open_ids = {item.id for item in service.list_suggestions(user["org_id"], "open")[0]}
        assert produced_id not in open_ids


def test_failed_analysis_records_the_error(app, make_user, monkeypatch, caplog):
    user = make_user()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(analysis, "analyze", fail)
    with app.app_context(), caplog.at_level(logging.ERROR, logger="app.insights.service"):
        with pytest.raises(RuntimeError):
            service.run_analysis(user["org_id"])
        state = db.session.get(AnalysisState, user["org_id"])
        assert state.status == "failed"
        assert state.error == "RuntimeError: disk full"
        assert state.finished_at is not None

    [record] = [record for record in caplog.records if record.name == "app.insights.service"]
    assert f"org_id={user['org_id']}" in record.getMessage()
    assert record.exc_info is not None


def test_run_while_another_runs_leaves_a_rerun(app, make_user, wait_for_jobs):
    user = make_user()
    running_since = datetime.now(UTC) - timedelta(minutes=1)
    with app.app_context():
        db.session.add(AnalysisState(org_id=user["org_id"], status="running", started_at=running_since))
        db.session.commit()

        assert service.run_analysis(user["org_id"]) is None
        state = db.session.get(AnalysisState, user["org_id"])
        assert state.queued is False
        assert state.requested_at > running_since

        # The running one finishes and finds the note left by the request that found it busy.
        service._finish_run(user["org_id"], running_since, status="succeeded")
        db.session.commit()
    wait_for_analysis(app, user["org_id"], wait_for_jobs)

    with app.app_context():
        state = db.session.get(AnalysisState, user["org_id"])
        assert state.status == "succeeded"
        assert state.started_at > running_since


def test_stale_running_state_is_taken_over(app, make_user):
    user = make_user()
    with app.app_context():
        started = datetime.now(UTC) - service.STALE_RUN_AFTER - timedelta(minutes=1)
        db.session.add(AnalysisState(org_id=user["org_id"], status="running", started_at=started))
        db.session.commit()

        summary = service.run_analysis(user["org_id"])

        assert summary is not None
        assert db.session.get(AnalysisState, user["org_id"]).status == "succeeded"


def test_run_of_a_dead_process_is_taken_over(app, make_user):
    user = make_user()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_runner = f"{service.socket.gethostname()}:{finished.stdout.strip()}"
    started = datetime.now(UTC) - timedelta(minutes=1)
    with app.app_context():
        db.session.add(AnalysisState(org_id=user["org_id"], status="running", started_at=started, run_by=dead_runner))
        db.session.commit()

        shown = service.analysis_state(user["org_id"])
        assert shown.status == "failed"
        assert dead_runner in shown.error
        db.session.rollback()

        summary = service.run_analysis(user["org_id"])

        assert summary is not None
        state = db.session.get(AnalysisState, user["org_id"])
        assert state.status == "succeeded"
        assert state.run_by == service.RUNNER


def test_run_of_a_live_process_is_left_alone(app, make_user):
    user = make_user()
    # The parent of this process (pytest's runner or a shell) is alive for the whole test.
    live_runner = f"{service.socket.gethostname()}:{os.getppid()}"
    with app.app_context():
        db.session.add(
            AnalysisState(org_id=user["org_id"], status="running", started_at=datetime.now(UTC), run_by=live_runner)
        )
        db.session.commit()

        assert service.run_analysis(user["org_id"]) is None
        assert db.session.get(AnalysisState, user["org_id"]).status == "running"
