"""Importing a git history: the log parser, a real repository, the CLI, the upload page and its job."""

import io
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from app.events import gitimport
from app.events.jobs import run_git_import_job
from app.events.models import Event, GitImport
from app.extensions import db
from app.timeutil import utcnow

HEADER_ERROR = "expected a commit header"


def parse(text):
    return list(gitimport.iter_commits(gitimport.split_lines(text)))


def count_file_lines(text):
    return sum(1 for line in text.splitlines() if line[:1].isdigit() or line.startswith("-\t"))


def stored_events(app, org_id):
    with app.app_context():
        events = db.session.scalars(db.select(Event).where(Event.org_id == org_id).order_by(Event.id)).all()
        db.session.expunge_all()
        return events


def imports_of(app, org_id):
    with app.app_context():
        rows = db.session.scalars(db.select(GitImport).where(GitImport.org_id == org_id).order_by(GitImport.id)).all()
        db.session.expunge_all()
        return rows


def add_import(app, org_id, **values):
    with app.app_context():
        git_import = GitImport(org_id=org_id, filename="history.log", **values)
        db.session.add(git_import)
        db.session.commit()
        return git_import.id


def import_git(app, path, email):
    return app.test_cli_runner().invoke(args=["floyo", "import-git", str(path), "--email", email])


# The parser


def test_parse_header_and_numstat():
    commits = parse("--3f2a9c1d--2025-02-13T10:16:25+01:00--Ada Lovelace\n12\t3\tsrc/app.py\n-\t-\tlogo.png\n\n")

    assert len(commits) == 1
    commit = commits[0]
    assert commit.hash == "3f2a9c1d"
    assert commit.date == datetime(2025, 2, 13, 9, 16, 25, tzinfo=UTC)
    assert commit.author == "Ada Lovelace"
    assert [(c.path, c.lines_added, c.lines_deleted, c.type) for c in commit.changes.values()] == [
        ("src/app.py", 12, 3, "file_modified"),
        ("logo.png", None, None, "file_modified"),
    ]


def test_parse_tolerates_crlf_and_missing_blank_line():
    text = (
        "--aaaa1111--2025-02-13T09:00:00Z--Ada\r\n1\t0\ta.txt\r\n\r\n"
        "--bbbb2222--2025-02-14T09:00:00Z--Ada\r\n2\t2\tb.txt"
    )

    commits = parse(text)

    assert [commit.hash for commit in commits] == ["aaaa1111", "bbbb2222"]
    assert [list(commit.changes) for commit in commits] == [["a.txt"], ["b.txt"]]


def test_parse_merge_commit_without_files():
    text = "--aaaa1111--2025-02-13T09:00:00Z--Ada\n--bbbb2222--2025-02-12T09:00:00Z--Ada\n1\t0\ta.txt\n"

    commits = parse(text)

    assert [commit.hash for commit in commits] == ["aaaa1111", "bbbb2222"]
    assert commits[0].changes == {}


def test_parse_author_containing_dashes():
    commits = parse("--aaaa1111--2025-02-13T09:00:00-07:00--Jean--Luc -- Picard\n1\t0\ta.txt\n")

    assert commits[0].author == "Jean--Luc -- Picard"
    assert commits[0].date == datetime(2025, 2, 13, 16, 0, tzinfo=UTC)


def test_parse_quoted_path():
    commits = parse('--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t0\t"docs/\\303\\251t\\303\\251 \\"draft\\".txt"\n')

    assert list(commits[0].changes) == ['docs/été "draft".txt']


def test_parse_summary_types_created_and_deleted():
    text = (
        "--aaaa1111--2025-02-13T09:00:00Z--Ada\n"
        "3\t0\tnew.txt\n0\t5\told.txt\n1\t1\tkept.txt\n"
        " create mode 100644 new.txt\n delete mode 100644 old.txt\n mode change 100644 => 100755 kept.txt\n"
    )

    commits = parse(text)

    assert {path: change.type for path, change in commits[0].changes.items()} == {
        "new.txt": "file_created",
        "old.txt": "file_deleted",
        "kept.txt": "file_modified",
    }


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", 1, "the log has no commits"),
        ("hello world\n", 1, HEADER_ERROR),
        ("1\t2\ta.txt\n", 1, HEADER_ERROR),
        ("--zzzz--2025-02-13T09:00:00Z--Ada\n", 1, HEADER_ERROR),
        ("--aaaa1111--yesterday--Ada\n", 1, "invalid commit date 'yesterday'"),
        ("--aaaa1111--2025-02-30T09:00:00Z--Ada\n", 1, "invalid commit date"),
        ("--aaaa1111--2025-02-13T09:00:00--Ada\n", 1, "has no UTC offset"),
        ("--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2 a.txt\n", 2, "expected '<added>\\t<deleted>\\t<path>'"),
        ("--aaaa1111--2025-02-13T09:00:00Z--Ada\nx\t2\ta.txt\n", 2, "expected '<added>\\t<deleted>\\t<path>'"),
        ("--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2\ta.txt\n\n3\t4\tb.txt\n", 4, HEADER_ERROR),
        ("--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2\ta\x00b\n", 2, "NUL character"),
        ('--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2\t"a\\qb"\n', 2, "invalid escape sequence"),
        ("--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2\t" + "a" * 1025 + "\n", 2, "longer than 1024 characters"),
    ],
)
def test_parse_rejects_malformed_log(text, line, message):
    with pytest.raises(gitimport.GitLogError) as caught:
        gitimport.count_commits(text)

    assert caught.value.line_number == line
    assert caught.value.message.startswith(f"Line {line}: ")
    assert message in caught.value.message
    assert caught.value.status == 422


def test_decode_rejects_invalid_utf8():
    with pytest.raises(gitimport.GitLogError) as caught:
        gitimport.decode_log(b"--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2\t\xff.txt\n")

    assert caught.value.line_number == 2
    assert "not valid UTF-8" in caught.value.message


def test_event_id_of_long_path_fits_column():
    commit_hash = "a" * 40
    long_path = "d/" * 100 + "a.txt"
    commit = gitimport.Commit(commit_hash, datetime(2025, 1, 1, tzinfo=UTC), "Ada")
    commit.changes["a.txt"] = gitimport.FileChange("a.txt", 1, 0)
    commit.changes[long_path] = gitimport.FileChange(long_path, 1, 0)

    short, long = gitimport.commit_events(commit)

    assert short["event_id"] == f"git:{commit_hash}:a.txt"
    assert long["event_id"].startswith(f"git:{commit_hash}:sha256:")
    assert len(long["event_id"]) <= 200
    assert long["path"] == long_path


# A real repository


def run_git(repository, *args, date=None):
    environment = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repository.parent),
        "GIT_AUTHOR_NAME": "Ada -- Lovelace",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada -- Lovelace",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    if date:
        environment.update({"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    completed = subprocess.run(
        ["git", *args], cwd=repository, env=environment, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


@pytest.fixture
def repository(tmp_path):
    """A repository of three commits that create, modify and delete files, with fixed dates."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path = tmp_path / "project"
    path.mkdir()
    run_git(path, "init", "--quiet")
    run_git(path, "config", "user.name", "Ada -- Lovelace")
    run_git(path, "config", "user.email", "ada@example.com")

    (path / "README.md").write_text("# Project\nFirst lines.\n")
    (path / "logo.png").write_bytes(b"\x89PNG\x00\x01\x02")
    run_git(path, "add", ".")
    run_git(path, "commit", "--quiet", "-m", "Start", date="2025-02-10T09:00:00+01:00")

    (path / "README.md").write_text("# Project\nBetter lines.\nMore.\n")
    (path / "app.py").write_text("print('hi')\n")
    run_git(path, "add", ".")
    run_git(path, "commit", "--quiet", "-m", "Add the app", date="2025-02-11T10:30:00-05:00")

    run_git(path, "rm", "--quiet", "logo.png")
    run_git(path, "commit", "--quiet", "-m", "Drop the logo", date="2025-02-12T23:45:00+00:00")

    hashes = run_git(path, "log", "--reverse", "--pretty=format:%H").split("\n")
    return {"path": path, "hashes": hashes}


def test_import_repository_stores_typed_events(app, make_user, repository):
    user = make_user()
    first, second, third = repository["hashes"]

    result = import_git(app, repository["path"], user["email"])

    assert result.exit_code == 0, result.output
    assert "Imported 3 commits: 5 events stored, 0 duplicates skipped." in result.output
    events = stored_events(app, user["org_id"])
    stored = {(event.session, event.path): event for event in events}
    assert len(events) == 5
    assert {key: event.type for key, event in stored.items()} == {
        (first, "README.md"): "file_created",
        (first, "logo.png"): "file_created",
        (second, "README.md"): "file_modified",
        (second, "app.py"): "file_created",
        (third, "logo.png"): "file_deleted",
    }
    assert stored[(second, "README.md")].meta == {
        "commit": second,
        "author": "Ada -- Lovelace",
        "lines_added": 2,
        "lines_deleted": 1,
    }
    assert stored[(first, "logo.png")].meta["lines_added"] is None
    assert stored[(first, "logo.png")].meta["lines_deleted"] is None
    assert stored[(second, "app.py")].occurred_at == datetime(2025, 2, 11, 15, 30, tzinfo=UTC)
    assert stored[(first, "README.md")].occurred_at == datetime(2025, 2, 10, 8, 0, tzinfo=UTC)
    assert stored[(third, "logo.png")].event_id == f"git:{third}:logo.png"
    assert {event.tool for event in events} == {"git"}
    assert {event.source for event in events} == {"git"}
    assert {event.user_id for event in events} == {user["id"]}


def test_reimport_repository_stores_nothing_new(app, make_user, repository):
    user = make_user()
    import_git(app, repository["path"], user["email"])

    result = import_git(app, repository["path"], user["email"])

    assert result.exit_code == 0, result.output
    assert "Imported 3 commits: 0 events stored, 5 duplicates skipped." in result.output
    assert len(stored_events(app, user["org_id"])) == 5
    assert [row.status for row in imports_of(app, user["org_id"])] == ["succeeded", "succeeded"]


# The CLI


def test_cli_imports_flask_log(app, make_user, shared_data):
    user = make_user()
    log_path = shared_data / "flask-gitlog.txt"
    file_lines = count_file_lines(log_path.read_text())

    result = import_git(app, log_path, user["email"])

    assert result.exit_code == 0, result.output
    assert f"Imported 5531 commits: {file_lines} events stored, 0 duplicates skipped." in result.output
    assert "500 of 5531 commits" in result.output
    assert len(stored_events(app, user["org_id"])) == file_lines
    (row,) = imports_of(app, user["org_id"])
    assert row.status == "succeeded"
    assert row.processed_commits == row.total_commits == 5531
    assert row.events_created == file_lines


def test_cli_rejects_unknown_email(app, repository):
    result = import_git(app, repository["path"], "nobody@example.com")

    assert result.exit_code != 0
    assert "No user with email 'nobody@example.com'" in result.output


@pytest.mark.parametrize("kind", ["missing", "not_a_repository", "malformed_file"])
def test_cli_rejects_bad_path(app, make_user, tmp_path, kind):
    user = make_user()
    paths = {
        "missing": tmp_path / "missing",
        "not_a_repository": tmp_path / "plain-folder",
        "malformed_file": tmp_path / "notes.txt",
    }
    messages = {
        "missing": "does not exist",
        "not_a_repository": "is not a git repository",
        "malformed_file": "Line 2: expected '<added>\\t<deleted>\\t<path>'",
    }
    (tmp_path / "plain-folder").mkdir()
    (tmp_path / "notes.txt").write_text("--aaaa1111--2025-02-13T09:00:00Z--Ada\nsome notes\n")

    result = import_git(app, paths[kind], user["email"])

    assert result.exit_code != 0
    assert messages[kind] in result.output
    assert stored_events(app, user["org_id"]) == []
    assert imports_of(app, user["org_id"]) == []


# The upload page and its job


def upload(client, content, filename="flask-gitlog.txt"):
    return client.post(
        "/events/import",
        data={"log": (io.BytesIO(content), filename)},
        content_type="multipart/form-data",
    )


def wait_for_import(app, wait_for_jobs, import_id):
    """Wait for the background jobs until the import has finished, and return its status.

    NOTE: wait_until_idle can return while a worker has taken a job off its queue but not yet added
    it to the started registry. RQ 2.12 keeps such a job in the queue's intermediate list, which
    wait_until_idle does not count, so the wait is repeated while the import is unfinished.
    """
    for _ in range(20):
        wait_for_jobs(timeout=120)
        with app.app_context():
            status = db.session.get(GitImport, import_id).status
        if status in ("succeeded", "failed"):
            break
    return status


def test_upload_runs_import_job(app, client, auth, make_user, shared_data, wait_for_jobs):
    user = make_user()
    auth.signin(user["email"])
    content = (shared_data / "flask-gitlog.txt").read_bytes()
    file_lines = count_file_lines(content.decode())

    response = upload(client, content)

    assert response.status_code == 302
    (row,) = imports_of(app, user["org_id"])
    assert response.headers["Location"] == f"/events/import/{row.id}"
    assert row.total_commits == 5531
    assert wait_for_import(app, wait_for_jobs, row.id) == "succeeded"
    page = client.get(f"/events/import/{row.id}")
    assert page.status_code == 200
    assert b'<progress max="100" value="100"' in page.data
    assert b"5,531 of 5,531 commits" in page.data
    assert f"{file_lines:,} events stored".encode() in page.data
    with app.app_context():
        finished = db.session.get(GitImport, row.id)
        assert finished.status == "succeeded"
        assert finished.percent == 100
        assert finished.events_created == file_lines
        assert finished.finished_at is not None
        assert finished.content is None
    assert len(stored_events(app, user["org_id"])) == file_lines


def test_upload_rejects_malformed_log(app, client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])

    response = upload(client, b"--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t2\ta.txt\nnot a file line\n")

    assert response.status_code == 422
    assert b"Line 3: expected" in response.data
    assert imports_of(app, user["org_id"]) == []
    assert stored_events(app, user["org_id"]) == []


def test_upload_requires_file(app, client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])

    response = client.post("/events/import", data={}, content_type="multipart/form-data")

    assert response.status_code == 422
    assert b"Choose a git log file to upload." in response.data
    assert imports_of(app, user["org_id"]) == []


def test_upload_rejects_file_over_limit(app, client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])
    app.config["GIT_IMPORT_MAX_BYTES"] = 100

    response = upload(client, b"--aaaa1111--2025-02-13T09:00:00Z--Ada\n" + b"1\t2\ta.txt\n" * 20)

    assert response.status_code == 413
    assert b"larger than the limit of 100 bytes" in response.data
    assert imports_of(app, user["org_id"]) == []


def test_upload_form_carries_csrf_token(app, client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])
    app.config["WTF_CSRF_ENABLED"] = True

    response = client.get("/events/import")

    assert response.status_code == 200
    assert b'name="csrf_token"' in response.data
    assert b'enctype="multipart/form-data"' in response.data


def test_import_of_other_org_not_found(app, client, auth, make_user):
    owner = make_user()
    other = make_user()
    import_id = add_import(app, owner["org_id"], status="succeeded", total_commits=3, processed_commits=3)
    auth.signin(other["email"])

    page = client.get(f"/events/import/{import_id}")
    fragment = client.get(f"/events/import/{import_id}", headers={"HX-Request": "true"})
    listing = client.get("/events/import")

    assert page.status_code == 404
    assert fragment.status_code == 404
    assert listing.status_code == 200
    assert f"/events/import/{import_id}".encode() not in listing.data


def test_progress_fragment_polls_while_running(app, client, auth, make_user):
    user = make_user()
    import_id = add_import(
        app,
        user["org_id"],
        status="running",
        total_commits=200,
        processed_commits=50,
        events_created=120,
        started_at=utcnow(),
        heartbeat_at=utcnow(),
    )
    auth.signin(user["email"])

    fragment = client.get(f"/events/import/{import_id}", headers={"HX-Request": "true"})

    assert fragment.status_code == 200
    assert b"<html" not in fragment.data
    assert f'hx-get="/events/import/{import_id}"'.encode() in fragment.data
    assert b'hx-trigger="every 1s"' in fragment.data
    assert b'hx-swap="outerHTML"' in fragment.data
    assert b'<progress max="100" value="25"' in fragment.data
    assert b"50 of 200 commits" in fragment.data
    assert b">Refresh</a>" in fragment.data
    assert "HX-Request" in fragment.headers["Vary"]


def test_progress_fragment_stops_when_finished(app, client, auth, make_user):
    user = make_user()
    import_id = add_import(
        app, user["org_id"], status="succeeded", total_commits=200, processed_commits=200, events_created=480
    )
    auth.signin(user["email"])

    fragment = client.get(f"/events/import/{import_id}", headers={"HX-Request": "true"})

    assert fragment.status_code == 200
    assert b"hx-trigger" not in fragment.data
    assert b"hx-get" not in fragment.data
    assert b'<progress max="100" value="100"' in fragment.data
    assert b'href="/"' in fragment.data
    assert b'href="/events"' in fragment.data


def test_stale_running_import_marked_failed(app, client, auth, make_user):
    user = make_user()
    long_ago = utcnow() - timedelta(minutes=30)
    import_id = add_import(
        app, user["org_id"], status="running", total_commits=10, started_at=long_ago, heartbeat_at=long_ago
    )
    auth.signin(user["email"])

    page = client.get(f"/events/import/{import_id}")

    assert page.status_code == 200
    assert b"stopped reporting progress" in page.data
    assert b"hx-trigger" not in page.data
    (row,) = imports_of(app, user["org_id"])
    assert row.status == "failed"
    assert row.finished_at is not None


def test_job_records_invalid_log_as_failed(app, make_user):
    user = make_user()
    import_id = add_import(app, user["org_id"], status="queued", content=b"not a git log\n")

    with app.app_context():
        run_git_import_job(import_id)

    (row,) = imports_of(app, user["org_id"])
    assert row.status == "failed"
    assert row.error.startswith("Line 1: expected a commit header")
    assert row.finished_at is not None
    with app.app_context():
        assert db.session.get(GitImport, import_id).content is None
    assert stored_events(app, user["org_id"]) == []


def test_job_skips_import_not_queued(app, make_user):
    user = make_user()
    import_id = add_import(
        app, user["org_id"], status="succeeded", content=b"--aaaa1111--2025-02-13T09:00:00Z--Ada\n1\t0\ta.txt\n"
    )

    with app.app_context():
        run_git_import_job(import_id)

    assert stored_events(app, user["org_id"]) == []
    assert imports_of(app, user["org_id"])[0].status == "succeeded"
