"""Importing a git history as usage events: parsing `git log` output, running git, storing progress.

The log format is the one the code-maat change-coupling tool reads:

    git log --numstat --no-renames --date=iso-strict --pretty=format:'--%h--%ad--%aN'

Each commit is a header `--<hash>--<ISO date with offset>--<author>`, then one
`<added>\\t<deleted>\\t<path>` line per changed file (`-` for binary files), then a blank line.
Merge commits are a header with no files. With `--summary` (as used for local repositories), lines
such as ` create mode 100644 <path>` and ` delete mode 100644 <path>` follow the numstat lines.
"""

import hashlib
import logging
import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.errors import NotFound, ServiceError, ValidationError
from app.events.models import Event, GitImport
from app.extensions import db
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

LOG_FORMAT_ARGS = ["--numstat", "--no-renames", "--date=iso-strict"]
# Commits stored per transaction; progress is committed after each chunk so the page can follow it.
CHUNK_COMMITS = 500
# A running import whose heartbeat is older than this has lost its worker. Heartbeats come after each
# chunk, so this must stay far longer than storing one chunk takes.
HEARTBEAT_TIMEOUT = timedelta(minutes=5)
GIT_TIMEOUT_SECONDS = 300

_HEADER = re.compile(r"^--(?P<hash>[0-9a-fA-F]{4,64})--(?P<date>.+?)--(?P<author>.*)$")
_NUMSTAT = re.compile(r"^(?P<added>\d+|-)\t(?P<deleted>\d+|-)\t(?P<path>.+)$")
_SUMMARY = re.compile(r"^ (?P<kind>create|delete) mode \d+ (?P<path>.+)$")
# Other `--summary` lines carry nothing an event needs (no renames or copies with --no-renames).
_IGNORED_SUMMARY = re.compile(r"^ (mode change|rename|copy) ")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}

PATH_MAX_LENGTH = Event.path.type.length
EVENT_ID_MAX_LENGTH = Event.event_id.type.length
EXPECTED_FORMAT = "git log --numstat --no-renames --date=iso-strict --pretty=format:'--%h--%ad--%aN'"


class GitLogError(ValidationError):
    """A log that is not in the expected format; `details` names the line."""

    code = "invalid_git_log"

    def __init__(self, line_number, message):
        super().__init__(
            f"Line {line_number}: {message} Produce the log with: {EXPECTED_FORMAT}",
            {"line": line_number},
        )
        self.line_number = line_number


class GitLogTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class GitRepositoryError(ValidationError):
    """A path that is not a readable git repository or log file, or a git command that failed."""

    code = "invalid_git_source"


@dataclass(slots=True)
class FileChange:
    path: str
    lines_added: int | None
    lines_deleted: int | None
    type: str = "file_modified"


@dataclass(slots=True)
class Commit:
    hash: str
    date: datetime
    author: str
    # Keyed by path, so that `--summary` lines find their file without a scan.
    changes: dict[str, FileChange] = field(default_factory=dict)


@dataclass(slots=True)
class ImportResult:
    commits: int
    events_stored: int
    duplicates: int


# Parsing


def iter_commits(lines):
    """Yield the commits of a log given as an iterable of lines, and raise GitLogError at the first bad line.

    Lines may end with LF or CRLF, the last commit may lack its blank line, and authors may contain
    `--` (the header splits at the first two separators only).
    """
    commit = None
    # True between a header and the blank line that ends its file list.
    in_file_list = False
    for line_number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if "\x00" in line:
            raise GitLogError(line_number, "contains a NUL character, so this is not a text git log.")
        if not line.strip():
            in_file_list = False
            continue

        if line.startswith("--"):
            if commit is not None:
                yield commit
            commit = _parse_header(line_number, line)
            in_file_list = True
            continue

        if commit is None or not in_file_list:
            raise GitLogError(
                line_number, f"expected a commit header '--<hash>--<ISO date>--<author>', found {_excerpt(line)}."
            )
        _parse_file_line(line_number, line, commit)

    if commit is None:
        raise GitLogError(1, "expected a commit header '--<hash>--<ISO date>--<author>', but the log has no commits.")
    yield commit


def split_lines(text):
    """Split at LF only: str.splitlines would also split at characters such as U+2028 inside a path."""
    return text.split("\n")


def count_commits(text):
    """Validate a whole log and return its number of commits. Raises GitLogError if any line is bad."""
    return sum(1 for _ in iter_commits(split_lines(text)))


def _parse_header(line_number, line):
    match = _HEADER.match(line)
    if match is None:
        raise GitLogError(
            line_number, f"expected a commit header '--<hash>--<ISO date>--<author>', found {_excerpt(line)}."
        )
    try:
        date = datetime.fromisoformat(match["date"])
    except ValueError:
        raise GitLogError(
            line_number, f"invalid commit date {match['date']!r}. Expected ISO 8601, such as 2025-02-13T09:16:25+01:00."
        ) from None
    if date.tzinfo is None:
        raise GitLogError(line_number, f"commit date {match['date']!r} has no UTC offset. Use --date=iso-strict.")
    try:
        date.astimezone(UTC)
    except OverflowError:
        raise GitLogError(line_number, f"commit date {match['date']!r} is out of range.") from None
    return Commit(hash=match["hash"].lower(), date=date, author=match["author"])


def _parse_file_line(line_number, line, commit):
    numstat = _NUMSTAT.match(line)
    if numstat is not None:
        path = _parse_path(line_number, numstat["path"])
        added = None if numstat["added"] == "-" else int(numstat["added"])
        deleted = None if numstat["deleted"] == "-" else int(numstat["deleted"])
        commit.changes.setdefault(path, FileChange(path, added, deleted))
        return

    summary = _SUMMARY.match(line)
    if summary is not None:
        path = _parse_path(line_number, summary["path"])
        change = commit.changes.get(path)
        if change is not None:
            change.type = "file_created" if summary["kind"] == "create" else "file_deleted"
        return

    if _IGNORED_SUMMARY.match(line):
        return
    raise GitLogError(
        line_number,
        f"expected '<added>\\t<deleted>\\t<path>' (numbers or '-', separated by tabs), found {_excerpt(line)}.",
    )


def _parse_path(line_number, text):
    path = _unquote_path(line_number, text) if text.startswith('"') else text
    if not path:
        raise GitLogError(line_number, "the file path is empty.")
    if len(path) > PATH_MAX_LENGTH:
        raise GitLogError(line_number, f"the file path is longer than {PATH_MAX_LENGTH} characters.")
    return path


def _unquote_path(line_number, text):
    """Decode a path that git quoted in C style because it contains special or non-ASCII bytes."""
    if len(text) < 2 or not text.endswith('"'):
        raise GitLogError(line_number, f"the quoted path {_excerpt(text)} has no closing quote.")
    body = text[1:-1]
    output = bytearray()
    index = 0
    while index < len(body):
        character = body[index]
        if character != "\\":
            output.extend(character.encode("utf-8"))
            index += 1
            continue
        escape = body[index + 1 : index + 2]
        octal = body[index + 1 : index + 4]
        if escape in _C_ESCAPES:
            output.append(_C_ESCAPES[escape])
            index += 2
        elif re.fullmatch(r"[0-3][0-7]{2}", octal):
            output.append(int(octal, 8))
            index += 4
        else:
            raise GitLogError(line_number, f"the quoted path {_excerpt(text)} has an invalid escape sequence.")
    return output.decode("utf-8", errors="replace")


def _excerpt(line):
    return repr(line[:80] + ("…" if len(line) > 80 else ""))


# Reading a history


def decode_log(content):
    """Decode an uploaded log as UTF-8, raising GitLogError with the line of the first invalid byte."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = content.count(b"\n", 0, error.start) + 1
        raise GitLogError(line_number, "is not valid UTF-8 text.") from None


def read_history(path, timeout=GIT_TIMEOUT_SECONDS):
    """Return the log text of a local git repository (a directory) or of a log file."""
    path = Path(path)
    if path.is_dir():
        return read_repository_log(path, timeout=timeout)
    if path.is_file():
        try:
            content = path.read_bytes()
        except OSError as error:
            raise GitRepositoryError(f"Cannot read {path}: {error.strerror}.") from None
        return decode_log(content)
    raise GitRepositoryError(f"{path} does not exist. Pass a git repository folder or a git log file.")


def read_repository_log(path, timeout=GIT_TIMEOUT_SECONDS):
    """Run `git log` in a local repository, with `--summary` so created and deleted files are known."""
    command = [
        "git",
        "-C",
        str(path),
        "log",
        *LOG_FORMAT_ARGS,
        "--summary",
        # A user's log.showSignature would mix signature checks into the output.
        "--no-show-signature",
        "--no-color",
        "--encoding=UTF-8",
        "--pretty=format:--%H--%ad--%aN",
    ]
    try:
        completed = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise GitRepositoryError("The git command was not found. Install git or pass a log file instead.") from None
    except subprocess.TimeoutExpired:
        raise GitRepositoryError(
            f"git log in {path} timed out after {timeout} seconds. Pass a longer --timeout or a log file."
        ) from None
    if completed.returncode != 0:
        stderr = completed.stderr.decode("utf-8", errors="replace").strip()
        reason = stderr.splitlines()[0] if stderr else f"exit status {completed.returncode}"
        if "not a git repository" in stderr:
            raise GitRepositoryError(f"{path} is not a git repository. git log failed with: {reason}")
        raise GitRepositoryError(f"git log failed in {path}: {reason}")
    return completed.stdout.decode("utf-8", errors="replace")


# Events


def commit_events(commit):
    """Build one event per changed file of a commit, in the shape that insert_events takes."""
    return [
        {
            "type": change.type,
            "path": change.path,
            "tool": "git",
            "occurred_at": commit.date,
            "session": commit.hash,
            "event_id": _event_id(commit.hash, change.path),
            "metadata": {
                "commit": commit.hash,
                "author": commit.author,
                "lines_added": change.lines_added,
                "lines_deleted": change.lines_deleted,
            },
        }
        for change in commit.changes.values()
    ]


def _event_id(commit_hash, path):
    """Return `git:<hash>:<path>`, or a digest of the path where that would not fit the event_id column."""
    event_id = f"git:{commit_hash}:{path}"
    if len(event_id) <= EVENT_ID_MAX_LENGTH:
        return event_id
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()
    return f"git:{commit_hash}:sha256:{digest}"


# Imports and their progress


def create_import(org_id, user_id, filename, content=None, status="queued", total_commits=0):
    git_import = GitImport(
        org_id=org_id,
        user_id=user_id,
        filename=filename[:255],
        content=content,
        status=status,
        total_commits=total_commits,
    )
    if status == "running":
        git_import.started_at = git_import.heartbeat_at = utcnow()
    db.session.add(git_import)
    db.session.flush()
    return git_import


def create_upload_import(org_id, user_id, filename, content, max_bytes):
    """Validate an uploaded log and store it as a queued import; the caller enqueues the job after commit.

    The whole log is checked here, so a malformed upload gets its error at once and stores nothing.
    """
    if len(content) > max_bytes:
        raise GitLogTooLarge(
            f"The log file is larger than the limit of {max_bytes:,} bytes. "
            "Upload a shorter history, for example with git log --since, or import it with 'flask floyo import-git'."
        )
    total = count_commits(decode_log(content))
    # Some browsers send the client's full path; only the file name is worth showing.
    filename = (filename or "").replace("\\", "/").rsplit("/", 1)[-1] or "git log"
    return create_import(org_id, user_id, filename, content=content, total_commits=total)


def get_import(org_id, import_id):
    """Return the organization's import, first marked failed if its worker died. Raises NotFound for other ids."""
    git_import = db.session.scalar(db.select(GitImport).where(GitImport.org_id == org_id, GitImport.id == import_id))
    if git_import is None:
        raise NotFound(f"No git import {import_id} in this organization.")
    expire_stale_imports(org_id)
    return git_import


def recent_imports(org_id, limit=20):
    expire_stale_imports(org_id)
    return db.session.scalars(
        db.select(GitImport).where(GitImport.org_id == org_id).order_by(GitImport.id.desc()).limit(limit)
    ).all()


def expire_stale_imports(org_id):
    """Mark running imports whose heartbeat stopped as failed, and return how many were marked.

    Only an import still running with an old heartbeat is changed, in one UPDATE, so a worker that
    is alive after all finds its row failed at its next progress update and stops.
    """
    now = utcnow()
    minutes = int(HEARTBEAT_TIMEOUT.total_seconds() // 60)
    marked = db.session.execute(
        db.update(GitImport)
        .where(
            GitImport.org_id == org_id,
            # NOTE: a queued import whose job was lost (Redis unreachable when it was enqueued) stays
            # queued. Queued imports are not checked, because one may be waiting behind a long queue.
            GitImport.status == "running",
            db.func.coalesce(GitImport.heartbeat_at, GitImport.started_at, GitImport.created_at)
            < now - HEARTBEAT_TIMEOUT,
        )
        .values(
            status="failed",
            finished_at=now,
            content=None,
            error=f"The worker running this import stopped reporting progress for over {minutes} minutes. "
            "Events stored so far are kept; upload the log again to import the rest.",
        )
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if marked:
        logger.warning("git imports marked failed after lost heartbeat org_id=%s count=%s", org_id, marked)
    return marked


class ImportAbandoned(Exception):
    """The import's row is no longer running (it was marked failed), so its worker must stop."""


def run_import(import_id, text, chunk_commits=CHUNK_COMMITS, on_progress=None):
    """Store the events of a log for a running GitImport, committing progress after each chunk of commits.

    The whole log is validated before the first event is stored, so a bad line stores nothing.
    `on_progress(processed_commits, total_commits, events_stored)` is called after each committed chunk.
    """
    from app.events.service import insert_events

    total = count_commits(text)
    git_import = db.session.get(GitImport, import_id)
    org_id, user_id = git_import.org_id, git_import.user_id
    _update_progress(import_id, total_commits=total)
    db.session.commit()
    logger.info("git import started import_id=%s org_id=%s commits=%s", import_id, org_id, total)

    processed = 0
    stored = 0
    duplicates = 0
    chunk = []
    commits = iter_commits(split_lines(text))
    while True:
        chunk.clear()
        for commit in commits:
            chunk.append(commit)
            if len(chunk) == chunk_commits:
                break
        if not chunk:
            break

        events = [event for commit in chunk for event in commit_events(commit)]
        outcomes = insert_events(org_id, user_id, "git", events) if events else []
        accepted = sum(1 for status, _ in outcomes if status == "accepted")
        stored += accepted
        duplicates += len(outcomes) - accepted
        processed += len(chunk)
        _update_progress(import_id, processed_commits=processed, events_created=stored)
        db.session.commit()

        if on_progress is not None:
            on_progress(processed, total, stored)

    logger.info(
        "git import stored import_id=%s org_id=%s commits=%s events=%s duplicates=%s",
        import_id,
        org_id,
        processed,
        stored,
        duplicates,
    )
    return ImportResult(commits=processed, events_stored=stored, duplicates=duplicates)


def _update_progress(import_id, **values):
    """Record progress and a heartbeat while the import is running. Raises ImportAbandoned once it is not."""
    updated = db.session.execute(
        db.update(GitImport)
        .where(GitImport.id == import_id, GitImport.status == "running")
        .values(heartbeat_at=utcnow(), **values)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if updated == 0:
        raise ImportAbandoned(f"git import {import_id} is no longer running")


def start_import(import_id):
    """Move a queued import to running. Returns False if it is not queued (already run or failed)."""
    now = utcnow()
    updated = db.session.execute(
        db.update(GitImport)
        .where(GitImport.id == import_id, GitImport.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    return updated == 1


def finish_import(import_id, error=None):
    """Mark a running import succeeded, or failed with `error`, and drop its stored log."""
    db.session.execute(
        db.update(GitImport)
        .where(GitImport.id == import_id, GitImport.status == "running")
        .values(status="failed" if error else "succeeded", error=error, finished_at=utcnow(), content=None)
        .execution_options(synchronize_session="fetch")
    )
