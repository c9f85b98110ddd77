"""Patterns and suggestions: running the analysis and reading its results.

Functions for pages, the API, jobs and the CLI. Every read and write is scoped by org_id; an id of
another organization's pattern or suggestion raises NotFound like an unknown one.
"""

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager

from app.errors import NotFound, ServiceError
from app.events.models import Event
from app.extensions import db
from app.insights import analysis
from app.insights.models import PATTERN_KINDS, SUGGESTION_STATUSES, AnalysisState, Pattern, Suggestion
from app.insights.suggestions import SUGGESTED_KINDS, SuggestionContext, build_suggestion, months_between
from app.orgs.models import Membership
from app.queue import DEFAULT_JOB_TIMEOUT, enqueue_after_commit
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

# Event rows fetched per round trip while loading an organization's events.
LOAD_CHUNK_ROWS = 20_000
# A run still marked running after the longest a job may take lost its worker; another may start.
# A run of a dead process on this host is taken over at once (see _expire_dead_run).
# NOTE: when the dead worker was on another host, runs requested meanwhile only leave a note that
# the dead run never reads, so the next analysis starts with the first request after this time.
STALE_RUN_AFTER = timedelta(seconds=DEFAULT_JOB_TIMEOUT)
LIST_STATUSES = (*SUGGESTION_STATUSES, "all")
# Recorded as run_by on the state while this process runs an analysis.
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


class InvalidQuery(ServiceError):
    """A filter or cursor value that cannot be used; the message names the parameter."""

    status = 400
    code = "invalid_filter"


@dataclass
class RunSummary:
    """Counts of one analysis run, for logs and the CLI."""

    org_id: int
    events: int = 0
    sessions: int = 0
    patterns_by_kind: dict = field(default_factory=dict)
    suggestions: int = 0
    no_longer_found: int = 0
    sequence_min_support: int = 0
    seconds: float = 0.0


# Requesting and running the analysis


def request_analysis(org_id):
    """Ask for an analysis of the organization's events, coalescing with one already queued.

    Call it inside the transaction that stored new events; the job is enqueued after that commit,
    and only when no job is queued yet, so a stream of batches starts one job, not one per batch.
    """
    now = utcnow()
    claimed = db.session.execute(
        db.update(AnalysisState)
        .where(AnalysisState.org_id == org_id, AnalysisState.queued.is_(False))
        .values(queued=True, requested_at=now)
    ).rowcount
    if claimed == 0:
        exists = db.session.scalar(db.select(AnalysisState.org_id).where(AnalysisState.org_id == org_id))
        if exists is not None:
            return False
        try:
            with db.session.begin_nested():
                db.session.add(AnalysisState(org_id=org_id, queued=True, requested_at=now))
        except IntegrityError:
            # Another request created the row first, and with it the job.
            return False
    from app.insights.jobs import run_analysis_job

    enqueue_after_commit(run_analysis_job, org_id, queue="analysis")
    return True


def run_analysis(org_id, settings=None):
    """Analyse all of the organization's events, store the patterns and suggestions, and commit.

    The run first clears `queued` (events arriving meanwhile queue another run) and marks the state
    running. Only one run per organization goes at a time: a run that finds another one running
    leaves it a note to run again when it finishes, and returns None. A failure is recorded on the
    state with its error, logged with the traceback, and raised again.
    """
    settings = settings or analysis.AnalysisSettings.from_config(current_app.config)
    started = utcnow()
    if not _start_run(org_id, started):
        logger.info("analysis already running org_id=%s; it runs again when it finishes", org_id)
        return None
    logger.info("analysis started org_id=%s", org_id)

    try:
        summary = _analyze_and_store(org_id, settings, started)
    except Exception as error:
        db.session.rollback()
        logger.exception("analysis failed org_id=%s", org_id)
        _finish_run(org_id, started, status="failed", error=f"{type(error).__name__}: {error}"[:2000])
        db.session.commit()
        raise
    _finish_run(
        org_id,
        started,
        status="succeeded",
        error=None,
        events_analyzed=summary.events,
        sessions_analyzed=summary.sessions,
    )
    db.session.commit()
    summary.seconds = (utcnow() - started).total_seconds()
    logger.info(
        "analysis finished org_id=%s events=%s sessions=%s patterns=%s suggestions=%s no_longer_found=%s "
        "sequence_min_support=%s seconds=%.1f",
        org_id,
        summary.events,
        summary.sessions,
        sum(summary.patterns_by_kind.values()),
        summary.suggestions,
        summary.no_longer_found,
        summary.sequence_min_support,
        summary.seconds,
    )
    return summary


def _start_run(org_id, now):
    """Mark a run started and commit; return False, leaving a note for the running one, if another runs."""
    _ensure_state(org_id)
    if _expire_dead_run(org_id, now):
        db.session.commit()
    # A few rounds cover a run that finishes between the two updates below.
    for _ in range(3):
        claimed = db.session.execute(
            db.update(AnalysisState)
            .where(
                AnalysisState.org_id == org_id,
                db.or_(
                    AnalysisState.status != "running",
                    AnalysisState.started_at.is_(None),
                    AnalysisState.started_at < now - STALE_RUN_AFTER,
                ),
            )
            .values(queued=False, status="running", started_at=now, finished_at=None, error=None, run_by=RUNNER)
        ).rowcount
        if claimed:
            db.session.commit()
            return True
        # queued=False with requested_at after the running run's start is the note: when that run
        # finishes, _finish_run queues another one for the request whose job found it busy.
        noted = db.session.execute(
            db.update(AnalysisState)
            .where(AnalysisState.org_id == org_id, AnalysisState.status == "running")
            .values(queued=False, requested_at=now)
        ).rowcount
        db.session.commit()
        if noted:
            return False
    return False


def _expire_dead_run(org_id, now):
    """Mark failed a run whose process, on this host, no longer exists; return True if one was.

    A process that exits while a job runs on its thread (a CLI command in the embedded mode, say)
    leaves the state running. Runs of other hosts are taken over only after STALE_RUN_AFTER.
    """
    row = db.session.execute(
        db.select(AnalysisState.started_at, AnalysisState.run_by).where(
            AnalysisState.org_id == org_id, AnalysisState.status == "running"
        )
    ).first()
    if row is None or not _process_gone(row.run_by):
        return False
    expired = db.session.execute(
        db.update(AnalysisState)
        .where(
            AnalysisState.org_id == org_id,
            AnalysisState.status == "running",
            AnalysisState.started_at == row.started_at,
        )
        .values(
            status="failed",
            finished_at=now,
            error=f"The process that ran this analysis ({row.run_by}) stopped before it finished.",
        )
    ).rowcount
    if expired:
        logger.warning("analysis process gone org_id=%s run_by=%s", org_id, row.run_by)
    return bool(expired)


def _process_gone(run_by):
    """Return True if run_by names a process of this host that no longer exists."""
    host, _, pid = (run_by or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # It exists, under another user.
    return False


def _ensure_state(org_id):
    if db.session.get(AnalysisState, org_id) is not None:
        return
    try:
        with db.session.begin_nested():
            db.session.add(AnalysisState(org_id=org_id))
    except IntegrityError:
        pass  # Created meanwhile by a request or another run.


def _finish_run(org_id, started, status, **values):
    """Record how the run ended, if it still owns the state, and queue a rerun a busy request asked for."""
    row = db.session.execute(
        db.update(AnalysisState)
        .where(AnalysisState.org_id == org_id, AnalysisState.started_at == started)
        .values(status=status, finished_at=utcnow(), **values)
        .returning(AnalysisState.queued, AnalysisState.requested_at)
    ).first()
    if row is None:
        logger.warning("analysis state taken over by a newer run org_id=%s", org_id)
        return
    queued, requested_at = row
    if not queued and requested_at is not None and requested_at > started:
        request_analysis(org_id)


def _analyze_and_store(org_id, settings, now):
    data = load_sessions(org_id, settings.session_gap_minutes)
    # End the read transaction before the long computation: in SQLite's WAL mode a transaction
    # that read before another connection wrote cannot write later, so the writes start afresh.
    db.session.commit()
    result = analysis.analyze(data, settings, now)
    summary = RunSummary(org_id=org_id, events=result.events, sessions=result.sessions)
    summary.sequence_min_support = result.sequence_min_support
    for pattern in result.patterns:
        summary.patterns_by_kind[pattern.kind] = summary.patterns_by_kind.get(pattern.kind, 0) + 1

    pattern_ids, summary.no_longer_found = _store_patterns(org_id, result.patterns, now)
    context = SuggestionContext(
        months_observed=months_between(result.first_time, result.last_time), notify_to=_owner_email(org_id)
    )
    summary.suggestions = _store_suggestions(org_id, result.patterns, pattern_ids, context, now)
    return summary


def load_sessions(org_id, gap_minutes):
    """Load the organization's events with a lean column query, streamed in chunks, and group them.

    The query runs on the Core connection, so rows are plain tuples with no ORM processing, and
    the database turns each time into seconds since the epoch.
    """
    events = Event.__table__
    query = db.select(
        events.c.user_id,
        events.c.session,
        _epoch_seconds(events.c.occurred_at),
        events.c.type,
        events.c.path,
        events.c.tool,
    ).where(events.c.org_id == org_id)
    builder = analysis.SessionBuilder()
    result = db.session.connection().execution_options(yield_per=LOAD_CHUNK_ROWS).execute(query)
    for chunk in result.partitions():
        builder.add(chunk)
    return builder.build(gap_minutes)


def _epoch_seconds(column):
    """Return an expression for a UTC timestamp column as float seconds since the epoch."""
    if db.session.get_bind().dialect.name == "postgresql":
        return db.cast(db.extract("epoch", column), db.Float)
    # SQLite stores the UTC time as text; julianday() parses it in C, to the millisecond.
    return (db.func.julianday(column) - 2440587.5) * 86400.0


def _upsert(table, rows, conflict_columns, update_columns):
    """Insert rows, updating `update_columns` of those that exist, as one executemany statement."""
    if not rows:
        return
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=conflict_columns,
        set_={column: statement.excluded[column] for column in update_columns},
    )
    db.session.execute(statement, rows)


def _store_patterns(org_id, patterns, now):
    """Upsert the found patterns, mark the others not current; return ({(kind, key): id}, marked)."""
    rows = {}
    for pattern in patterns:
        rows[(pattern.kind, pattern.key)] = {
            "org_id": org_id,
            "kind": pattern.kind,
            "key": pattern.key,
            "score": pattern.score,
            "data": pattern.data,
            "current": True,
            "first_found_at": now,
            "updated_at": now,
        }
    _upsert(
        Pattern.__table__, list(rows.values()), ["org_id", "kind", "key"], ["score", "data", "current", "updated_at"]
    )
    # Every pattern this run found has updated_at == now; older ones were not found again.
    no_longer_found = db.session.execute(
        db.update(Pattern)
        .where(Pattern.org_id == org_id, Pattern.current.is_(True), Pattern.updated_at < now)
        .values(current=False)
    ).rowcount
    found = db.session.execute(
        db.select(Pattern.kind, Pattern.key, Pattern.id).where(Pattern.org_id == org_id, Pattern.updated_at == now)
    )
    return {(kind, key): pattern_id for kind, key, pattern_id in found}, no_longer_found


def _store_suggestions(org_id, patterns, pattern_ids, context, now):
    """Upsert one suggestion per pattern of a suggested kind; decisions (status, decided_*) are kept."""
    rows = []
    for pattern in patterns:
        if pattern.kind not in SUGGESTED_KINDS:
            continue
        fields = build_suggestion(pattern.kind, pattern.data, context)
        rows.append(
            {
                "org_id": org_id,
                "pattern_id": pattern_ids[(pattern.kind, pattern.key)],
                "kind": pattern.kind,
                **fields,
                "status": "open",
                "created_at": now,
                "updated_at": now,
            }
        )
    updated = [
        "kind",
        "title",
        "evidence",
        "minutes_saved_per_month",
        "sample_code",
        "workflow_draft",
        "score",
        "updated_at",
    ]
    _upsert(Suggestion.__table__, rows, ["pattern_id"], updated)
    return len(rows)


def _owner_email(org_id):
    from app.auth.models import User

    email = db.session.scalar(
        db.select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id, Membership.role == "owner")
        .order_by(Membership.id)
        .limit(1)
    )
    return email or ""


def analysis_state(org_id):
    """Return the organization's AnalysisState, or an unsaved one with status "never".

    A run whose process on this host died shows as failed; the caller's commit keeps that.
    """
    expired = _expire_dead_run(org_id, utcnow())
    state = db.session.get(AnalysisState, org_id)
    if state is not None and expired:
        db.session.refresh(state)
    if state is None:
        return AnalysisState(org_id=org_id, queued=False, status="never", events_analyzed=0, sessions_analyzed=0)
    return state


def pattern_counts(org_id):
    """Return {kind: number of current patterns} for every kind."""
    counts = dict.fromkeys(PATTERN_KINDS, 0)
    rows = db.session.execute(
        db.select(Pattern.kind, db.func.count())
        .where(Pattern.org_id == org_id, Pattern.current.is_(True))
        .group_by(Pattern.kind)
    )
    counts.update({kind: count for kind, count in rows})
    return counts


# Patterns


def parse_kind(value, allowed=PATTERN_KINDS):
    """Return a kind filter from a query parameter (None when empty); raise InvalidQuery for others."""
    if value in (None, ""):
        return None
    if value not in allowed:
        raise InvalidQuery(f"kind must be one of {', '.join(allowed)}; got {value!r}.", {"parameter": "kind"})
    return value


def list_patterns(org_id, kind=None, limit=50, cursor_values=None, include_stale=False):
    """Return up to `limit` patterns, strongest first (score descending, then id), and the next cursor.

    Only current patterns unless `include_stale`. The cursor is [score, id] of the last pattern.
    """
    query = db.select(Pattern).where(Pattern.org_id == org_id)
    if kind:
        query = query.where(Pattern.kind == kind)
    if not include_stale:
        query = query.where(Pattern.current.is_(True))
    if cursor_values is not None:
        score, last_id = _score_cursor(cursor_values)
        query = query.where(db.or_(Pattern.score < score, db.and_(Pattern.score == score, Pattern.id > last_id)))
    query = query.order_by(Pattern.score.desc(), Pattern.id).limit(limit + 1)

    patterns = db.session.scalars(query).all()
    if len(patterns) <= limit:
        return patterns, None
    patterns = patterns[:limit]
    return patterns, [patterns[-1].score, patterns[-1].id]


def get_pattern(org_id, pattern_id):
    """Return the organization's pattern, or raise NotFound (also for other organizations' ids)."""
    pattern = db.session.scalar(db.select(Pattern).where(Pattern.id == pattern_id, Pattern.org_id == org_id))
    if pattern is None:
        raise NotFound(f"Pattern {pattern_id} was not found.")
    return pattern


def strongest_patterns(org_id, per_kind=5):
    """Return {kind: the `per_kind` current patterns of highest score} for the dashboard."""
    return {kind: list_patterns(org_id, kind=kind, limit=per_kind)[0] for kind in PATTERN_KINDS}


def suggestion_for_pattern(org_id, pattern_id):
    """Return the suggestion made from a pattern, or None (frequent kinds have none)."""
    return db.session.scalar(
        db.select(Suggestion).where(Suggestion.org_id == org_id, Suggestion.pattern_id == pattern_id)
    )


def _score_cursor(values):
    score, last_id = values
    if type(score) not in (int, float) or type(last_id) is not int:
        raise InvalidQuery(
            "The cursor is invalid. Use the next_cursor of a previous page, unchanged.", {"parameter": "cursor"}
        )
    return float(score), last_id


# Suggestions


def kind_weights(org_id):
    """Return the ranking weight of each suggestion kind, learned from the organization's decisions.

    weight = 2 × (accepted + 1) / (accepted + dismissed + 2): 1.0 without decisions, towards 2 as
    a kind is accepted and towards 0 as it is dismissed (three dismissals and no acceptance: 0.4).
    A suggestion's ranked score is its score times its kind's weight.
    """
    counts = {kind: {"accepted": 0, "dismissed": 0} for kind in SUGGESTED_KINDS}
    rows = db.session.execute(
        db.select(Suggestion.kind, Suggestion.status, db.func.count())
        .where(Suggestion.org_id == org_id, Suggestion.status.in_(("accepted", "dismissed")))
        .group_by(Suggestion.kind, Suggestion.status)
    )
    for kind, status, count in rows:
        counts.setdefault(kind, {"accepted": 0, "dismissed": 0})[status] = count
    return {
        kind: 2 * (decided["accepted"] + 1) / (decided["accepted"] + decided["dismissed"] + 2)
        for kind, decided in counts.items()
    }


def parse_status(value):
    """Return a status filter from a query parameter ("open" when empty); raise InvalidQuery for others."""
    if value in (None, ""):
        return "open"
    if value not in LIST_STATUSES:
        raise InvalidQuery(f"status must be one of {', '.join(LIST_STATUSES)}; got {value!r}.", {"parameter": "status"})
    return value


def list_suggestions(org_id, status="open", kind=None, limit=50, cursor_values=None):
    """Return up to `limit` suggestions, ranked, and the next cursor.

    Ranked by score × the kind's feedback weight (see kind_weights), descending, then id; each
    returned suggestion carries that value as `ranked_score`. Open suggestions are listed only
    while their pattern is current; accepted and dismissed ones always. `status` "all" lists every
    status. The cursor is [ranked score, id] of the last suggestion.
    """
    weights = kind_weights(org_id)
    ranked = (Suggestion.score * db.case(weights, value=Suggestion.kind, else_=1.0)).label("ranked_score")
    query = (
        db.select(Suggestion, ranked)
        .join(Suggestion.pattern)
        .options(contains_eager(Suggestion.pattern))
        .where(Suggestion.org_id == org_id)
    )
    if status != "all":
        query = query.where(Suggestion.status == status)
    if status == "open":
        query = query.where(Pattern.current.is_(True))
    if kind:
        query = query.where(Suggestion.kind == kind)
    if cursor_values is not None:
        score, last_id = _score_cursor(cursor_values)
        query = query.where(db.or_(ranked < score, db.and_(ranked == score, Suggestion.id > last_id)))
    query = query.order_by(ranked.desc(), Suggestion.id).limit(limit + 1)

    suggestions = []
    for suggestion, ranked_score in db.session.execute(query):
        suggestion.ranked_score = ranked_score
        suggestions.append(suggestion)
    if len(suggestions) <= limit:
        return suggestions, None
    suggestions = suggestions[:limit]
    return suggestions, [suggestions[-1].ranked_score, suggestions[-1].id]


def top_suggestions(org_id, limit=5):
    """Return the best-ranked open suggestions, for the dashboard."""
    return list_suggestions(org_id, "open", limit=limit)[0]


def get_suggestion(org_id, suggestion_id):
    """Return the organization's suggestion with `ranked_score` set, or raise NotFound."""
    suggestion = db.session.scalar(
        db.select(Suggestion).where(Suggestion.id == suggestion_id, Suggestion.org_id == org_id)
    )
    if suggestion is None:
        raise NotFound(f"Suggestion {suggestion_id} was not found.")
    suggestion.ranked_score = suggestion.score * kind_weights(org_id).get(suggestion.kind, 1.0)
    return suggestion


def accept_suggestion(org_id, suggestion_id, user_id):
    """Mark a suggestion accepted by the user; the caller commits. Re-analysis keeps the decision."""
    return _decide(org_id, suggestion_id, user_id, "accepted")


def dismiss_suggestion(org_id, suggestion_id, user_id):
    """Mark a suggestion dismissed by the user; the caller commits. Re-analysis keeps the decision."""
    return _decide(org_id, suggestion_id, user_id, "dismissed")


def _decide(org_id, suggestion_id, user_id, status):
    suggestion = get_suggestion(org_id, suggestion_id)
    if suggestion.status != status:
        suggestion.status = status
        suggestion.decided_at = utcnow()
        suggestion.decided_by_id = user_id
        db.session.flush()
        logger.info(
            "suggestion %s org_id=%s suggestion_id=%s user_id=%s kind=%s",
            status,
            org_id,
            suggestion_id,
            user_id,
            suggestion.kind,
        )
    suggestion.ranked_score = suggestion.score * kind_weights(org_id).get(suggestion.kind, 1.0)
    return suggestion


def suggestion_counts(org_id):
    """Return {status: number of suggestions}, counting open ones only while their pattern is current."""
    counts = dict.fromkeys(SUGGESTION_STATUSES, 0)
    rows = db.session.execute(
        db.select(Suggestion.status, db.func.count())
        .join(Pattern, Pattern.id == Suggestion.pattern_id)
        .where(
            Suggestion.org_id == org_id,
            db.or_(Suggestion.status != "open", Pattern.current.is_(True)),
        )
        .group_by(Suggestion.status)
    )
    counts.update({status: count for status, count in rows})
    return counts
