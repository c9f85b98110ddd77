"""The analysis: group events into sessions and find the patterns in them.

Pure computation on numpy arrays, with no Flask and no database, so it can be tested and benchmarked
on its own. `SessionBuilder` takes event rows chunk by chunk, as a database cursor yields them, and
builds `SessionData`. `analyze` runs every finder on it and returns the `FoundPattern`s that the
service stores. Sequence mining lives in `app.insights.sequences`.

Times are seconds since the epoch (UTC) in float64 arrays.
"""

import hashlib
import posixpath
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy import sparse

from app.insights import sequences as sequence_mining
from app.insights.sequences import sorted_unique

SECONDS_PER_DAY = 86400
COMMAND_TYPES = ("command_executed", "tool_used")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A slot (a weekday, an hour) recurs only if at least this share of the days with a use fall in it.
# A file used on every day of busy weeks comes back on every weekday, so no weekday is its habit.
RECURRENCE_MIN_SHARE = 0.5
# Examples of varying product names kept on a produced-files pattern.
PRODUCED_EXAMPLES = 5


@dataclass(frozen=True)
class AnalysisSettings:
    """The thresholds of the analysis; `from_config` reads them from the app's settings."""

    session_gap_minutes: int = 30
    coupling_max_session_files: int = 30
    coupling_min_revs: int = 5
    coupling_min_shared: int = 5
    coupling_min_degree: float = 30.0
    # None disables the gap limit between sequence steps (the benchmark compares with that).
    sequence_max_gap_minutes: int | None = 10
    sequence_min_support: int = 3
    sequence_max_length: int = 4
    recurrence_min_weeks: int = 3
    produced_min_sessions: int = 3
    frequent_top_n: int = 50
    # Co-used pairs, sequences, recurrences and produced files kept per kind, strongest first.
    max_patterns_per_kind: int = 200

    @classmethod
    def from_config(cls, config):
        return cls(
            session_gap_minutes=config["ANALYSIS_SESSION_GAP_MINUTES"],
            coupling_max_session_files=config["COUPLING_MAX_SESSION_FILES"],
            coupling_min_revs=config["COUPLING_MIN_REVS"],
            coupling_min_shared=config["COUPLING_MIN_SHARED"],
            coupling_min_degree=config["COUPLING_MIN_DEGREE"],
            sequence_max_gap_minutes=config["SEQUENCE_MAX_GAP_MINUTES"],
            sequence_min_support=config["SEQUENCE_MIN_SUPPORT"],
            sequence_max_length=config["SEQUENCE_MAX_LENGTH"],
            recurrence_min_weeks=config["RECURRENCE_MIN_WEEKS"],
            produced_min_sessions=config["PRODUCED_MIN_SESSIONS"],
            frequent_top_n=config["FREQUENT_TOP_N"],
            max_patterns_per_kind=config["ANALYSIS_MAX_PATTERNS_PER_KIND"],
        )


@dataclass
class FoundPattern:
    """A pattern as the analysis finds it: `identity` (the paths and slots that name it) gives its key."""

    kind: str
    identity: tuple
    score: float
    data: dict

    @property
    def key(self):
        return pattern_key(self.kind, self.identity)


@dataclass
class AnalysisResult:
    patterns: list
    events: int
    sessions: int
    # First and last event time (seconds), or None without events.
    first_time: float | None
    last_time: float | None
    # The support the sequence search used; higher than the setting when the setting found too many.
    sequence_min_support: int = 0


def pattern_key(kind, identity):
    """Return the stable key of a pattern: a SHA-256 hex digest of its kind and identity."""
    text = "\x1f".join([kind, *(str(part) for part in identity)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Sessions


@dataclass
class SessionData:
    """Events grouped into sessions: parallel arrays sorted by session, then time.

    Session i contains the events offsets[i] to offsets[i + 1] - 1. Paths, tools and types are stored
    as ids into the `paths`, `tools` and `types` lists.
    """

    paths: list
    tools: list
    types: list
    path_ids: np.ndarray
    tool_ids: np.ndarray
    type_ids: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    _session_of: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_events(self):
        return len(self.path_ids)

    @property
    def n_sessions(self):
        return len(self.offsets) - 1

    @property
    def session_of(self):
        """The session index of every event."""
        if self._session_of is None:
            self._session_of = np.repeat(np.arange(self.n_sessions, dtype=np.int64), np.diff(self.offsets))
        return self._session_of

    def type_id(self, name):
        """Return the id of an event type, or -1 when no event has it."""
        try:
            return self.types.index(name)
        except ValueError:
            return -1


class SessionBuilder:
    """Collect event rows in chunks and group them into sessions.

    Rows are (user_id, session, occurred_at, type, path, tool); occurred_at is an aware datetime or
    seconds since the epoch. Paths, tools and types are turned into ids as rows arrive, so a large
    result is never held as Python objects, only as compact arrays.
    """

    def __init__(self):
        self._paths = {}
        self._tools = {}
        self._types = {}
        self._session_values = {}
        self._path_ids = array("q")
        self._tool_ids = array("q")
        self._type_ids = array("q")
        self._times = array("d")
        # The id of the event's `session` value, or -1 when it has none.
        self._groups = array("q")
        self._users = array("q")

    def add(self, rows):
        """Add a chunk of rows; the chunk is turned into columns, which is faster than row by row."""
        rows = list(rows)
        if not rows:
            return
        # Column by column: zip(*rows) is far slower on chunks of many thousand rows.
        users, sessions, times, types, paths, tools = ([row[index] for row in rows] for index in range(6))
        self._path_ids.extend(_intern(self._paths, paths))
        self._tool_ids.extend(_intern(self._tools, tools))
        self._type_ids.extend(_intern(self._types, types))
        session_values = self._session_values
        self._groups.extend(
            [session_values.setdefault(value, len(session_values)) if value else -1 for value in sessions]
        )
        self._users.extend([-1 if user is None else user for user in users])
        if all(isinstance(value, float) for value in times):
            self._times.extend(times)
        else:
            self._times.extend([value if isinstance(value, float) else value.timestamp() for value in times])

    def build(self, gap_minutes):
        """Group the events: by `session` value where set, else per user, split at gaps over `gap_minutes`.

        One `session` value is one session whoever sent its events, as a commit hash is for
        everyone who imports the same repository.
        """
        times = np.frombuffer(self._times, dtype=np.float64)
        groups = np.frombuffer(self._groups, dtype=np.int64)
        users = np.frombuffer(self._users, dtype=np.int64)
        session_ids = groups.copy()

        ungrouped = np.flatnonzero(groups < 0)
        if len(ungrouped):
            order = ungrouped[np.lexsort((times[ungrouped], users[ungrouped]))]
            breaks = np.ones(len(order), dtype=bool)
            breaks[1:] = (users[order[1:]] != users[order[:-1]]) | (np.diff(times[order]) > gap_minutes * 60)
            session_ids[order] = len(self._session_values) + np.cumsum(breaks) - 1

        # Session numbers are dense: values first, then the split sessions, so no session is empty.
        order = np.lexsort((times, session_ids))
        counts = np.bincount(session_ids, minlength=0) if len(session_ids) else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return SessionData(
            paths=list(self._paths),
            tools=list(self._tools),
            types=list(self._types),
            path_ids=np.frombuffer(self._path_ids, dtype=np.int64)[order],
            tool_ids=np.frombuffer(self._tool_ids, dtype=np.int64)[order],
            type_ids=np.frombuffer(self._type_ids, dtype=np.int64)[order],
            times=times[order],
            offsets=offsets,
        )


def _intern(index, values):
    """Return the id of each value in `index`, adding the values it does not have yet."""
    return [index.setdefault(value, len(index)) for value in values]


def build_sessions(rows, gap_minutes=30):
    """Group an iterable of event rows into sessions; see SessionBuilder for the row shape."""
    builder = SessionBuilder()
    builder.add(rows)
    return builder.build(gap_minutes)


# Frequent files, types and tools


def find_frequent(data, now, top_n):
    """Find the most used files, file types (extensions) and tools, by events over all time.

    Each carries its event counts over the last 7 and 30 days before `now` (seconds), the number of
    sessions it appears in and its last use. Events without a tool and files without an extension
    count towards no tool or type.
    """
    if data.n_events == 0:
        return []
    recent_7 = data.times >= now - 7 * SECONDS_PER_DAY
    recent_30 = data.times >= now - 30 * SECONDS_PER_DAY
    session_of = data.session_of

    extensions = [_extension(path) for path in data.paths]
    extension_names = sorted(set(extensions) - {""})
    extension_index = {name: index for index, name in enumerate(extension_names)}
    extension_of_path = np.array([extension_index.get(name, -1) for name in extensions], dtype=np.int64)
    extension_ids = extension_of_path[data.path_ids]

    found = []
    groupings = (
        ("frequent_file", "path", data.paths, data.path_ids),
        ("frequent_type", "extension", extension_names, extension_ids),
        ("frequent_tool", "tool", data.tools, data.tool_ids),
    )
    for kind, label, names, ids in groupings:
        valid = ids >= 0
        if kind == "frequent_tool":
            valid &= np.array([bool(name) for name in names], dtype=bool)[ids]
        if not valid.any():
            continue
        size = len(names)
        ids_valid = ids[valid]
        events = np.bincount(ids_valid, minlength=size)
        events_7 = np.bincount(ids[valid & recent_7], minlength=size)
        events_30 = np.bincount(ids[valid & recent_30], minlength=size)
        last_used = np.full(size, -np.inf)
        np.maximum.at(last_used, ids_valid, data.times[valid])
        pairs = sorted_unique(session_of[valid] * size + ids_valid)
        sessions = np.bincount(pairs % size, minlength=size)

        ranked = np.lexsort((-last_used, -events))[:top_n]
        for index in ranked:
            if events[index] == 0:
                break
            pattern_data = {
                label: names[index],
                "events": int(events[index]),
                "events_7d": int(events_7[index]),
                "events_30d": int(events_30[index]),
                "sessions": int(sessions[index]),
                "last_used_at": _iso(last_used[index]),
            }
            if kind == "frequent_type":
                pattern_data["files"] = int(np.count_nonzero(extension_of_path == index))
            found.append(FoundPattern(kind, (names[index],), float(events[index]), pattern_data))
    return found


def _extension(path):
    """Return the lower-case extension of a path's last part (".py"), or "" when it has none."""
    name = posixpath.basename(path.replace("\\", "/"))
    stem, extension = posixpath.splitext(name)
    return extension.lower() if stem else ""


# Co-used files


@dataclass
class PairCounts:
    """Pairs of files and the number of sessions they share, over sessions of at most the size limit."""

    file_sessions: np.ndarray  # per path id: sessions within the limit that touch it
    first: np.ndarray  # path ids, first < second
    second: np.ndarray
    shared: np.ndarray
    sessions_counted: int


def count_pairs(data, max_session_files, min_shared):
    """Count, for every pair of files with at least `min_shared` shared sessions, the sessions they share.

    A session counts once per file however often the file appears in it. Sessions with more than
    `max_session_files` distinct files are left out entirely, also from each file's own session
    count: that is how code-maat counts (a commit over its max-changeset-size is dropped before
    anything is counted), and counting them would change the degree of pairs.
    """
    n_paths = len(data.paths)
    keys = sorted_unique(data.session_of * n_paths + data.path_ids)
    session_of_key = keys // n_paths
    path_of_key = keys % n_paths
    files_in_session = np.bincount(session_of_key, minlength=data.n_sessions)
    within_limit = files_in_session[session_of_key] <= max_session_files
    session_of_key = session_of_key[within_limit]
    path_of_key = path_of_key[within_limit]
    file_sessions = np.bincount(path_of_key, minlength=n_paths)
    sessions_counted = int(np.count_nonzero((files_in_session > 0) & (files_in_session <= max_session_files)))

    # A file in fewer sessions than min_shared cannot share that many with another, so it is left
    # out of the matrix, which keeps X^T X small.
    candidates = np.flatnonzero(file_sessions >= max(min_shared, 1))
    column_of_path = np.full(n_paths, -1, dtype=np.int64)
    column_of_path[candidates] = np.arange(len(candidates))
    columns = column_of_path[path_of_key]
    keep = columns >= 0
    matrix = sparse.csr_matrix(
        (np.ones(np.count_nonzero(keep), dtype=np.int32), (session_of_key[keep], columns[keep])),
        shape=(data.n_sessions, len(candidates)),
    )
    co_occurrence = sparse.triu(matrix.T @ matrix, k=1).tocoo()
    strong = co_occurrence.data >= min_shared
    first = candidates[co_occurrence.row[strong]]
    second = candidates[co_occurrence.col[strong]]
    return PairCounts(
        file_sessions=file_sessions,
        first=first,
        second=second,
        shared=co_occurrence.data[strong].astype(np.int64),
        sessions_counted=sessions_counted,
    )


def find_co_used(data, max_session_files=30, min_revs=5, min_shared=5, min_degree=30.0, limit=None):
    """Find pairs of files used in the same sessions, with code-maat's change-coupling degree.

    degree(a, b) = shared / mean(sessions of a, sessions of b) × 100, counted as `count_pairs`
    does. As in code-maat, a pair is kept when the mean of its two session counts is at least
    `min_revs` (with min_shared >= min_revs that is the same as each file having min_revs, since
    neither can have fewer sessions than the pair shares), it shares at least `min_shared` sessions
    and its exact degree is at least `min_degree`. code-maat prints the degree truncated to an
    integer (90 for 90.91); `degree` here is rounded to one decimal (90.9) and `score` is exact.

    Confidence a → b is shared / sessions of a, and `confidence` is the larger of both directions.
    Lift is shared × sessions / (sessions of a × sessions of b), over the sessions within the size
    limit.
    """
    if data.n_events == 0:
        return []
    counts = count_pairs(data, max_session_files, min_shared)
    sessions_first = counts.file_sessions[counts.first]
    sessions_second = counts.file_sessions[counts.second]
    revs_total = sessions_first + sessions_second
    # Integer comparisons: mean >= min_revs and 100 × shared / mean >= min_degree, without rounding.
    keep = (revs_total >= 2 * min_revs) & (200 * counts.shared >= min_degree * revs_total)

    found = []
    for a, b, shared, sessions_a, sessions_b in zip(
        counts.first[keep],
        counts.second[keep],
        counts.shared[keep],
        sessions_first[keep],
        sessions_second[keep],
        strict=True,
    ):
        path_a, path_b = sorted((data.paths[a], data.paths[b]))
        if path_a != data.paths[a]:
            sessions_a, sessions_b = sessions_b, sessions_a
        shared, sessions_a, sessions_b = int(shared), int(sessions_a), int(sessions_b)
        degree = 200 * shared / (sessions_a + sessions_b)
        pattern_data = {
            "files": [path_a, path_b],
            "shared_sessions": shared,
            "degree": round(degree, 1),
            "file_sessions": [sessions_a, sessions_b],
            "confidence": round(max(shared / sessions_a, shared / sessions_b), 4),
            "confidence_first_to_second": round(shared / sessions_a, 4),
            "confidence_second_to_first": round(shared / sessions_b, 4),
            "lift": round(shared * counts.sessions_counted / (sessions_a * sessions_b), 4),
            "support": round(shared / counts.sessions_counted, 6),
            "sessions_considered": counts.sessions_counted,
        }
        found.append(FoundPattern("co_used", (path_a, path_b), degree, pattern_data))
    found.sort(key=lambda pattern: (-pattern.score, -pattern.data["shared_sessions"], pattern.identity))
    return found[:limit] if limit else found


# Sequences


def find_sequences(data, min_support=3, max_length=4, max_gap_minutes=10, limit=None):
    """Find ordered steps seen in many sessions; see `app.insights.sequences` for the definition.

    Returns (patterns, the minimum support used). Each pattern carries the supporting sessions and
    the time of its first step in each, which the recurrence search uses (`_sessions`, `_times`,
    dropped before storing).
    """
    if data.n_events == 0:
        return [], min_support
    max_gap = None if max_gap_minutes is None else max_gap_minutes * 60
    mined = sequence_mining.find_closed_sequences(
        data.path_ids, data.times, data.offsets, min_support, max_length, max_gap, limit, names=data.paths
    )
    found = []
    for sequence in mined.sequences:
        steps = [data.paths[item] for item in sequence.items]
        pattern_data = {
            "steps": steps,
            "length": len(steps),
            "support": sequence.support,
            "median_gap_seconds": round(sequence.median_gap, 1),
            "first_step_sessions": sequence.first_step_support,
            "confidence": round(sequence.support / sequence.first_step_support, 4),
            "last_seen_at": _iso(float(sequence.first_times.max())),
            "_sessions": sequence.sessions,
            "_times": sequence.first_times,
        }
        found.append(FoundPattern("sequence", tuple(steps), float(sequence.support), pattern_data))
    return found, mined.min_support


# Recurrence


def find_recurrence(data, sequence_patterns=(), min_weeks=3, min_share=RECURRENCE_MIN_SHARE, limit=None):
    """Find files and sequences that come back on the same weekday or at the same hour, week after week.

    A slot is a weekday, an hour of the day or both, in UTC. A file recurs in a slot when it was
    used in that slot in at least `min_weeks` different ISO weeks. Also, the days with a use in the
    slot must be at least `min_share` of all days with a use, because a file used every day of busy
    weeks comes back on every weekday without any weekday being its habit. Only the most specific
    slots are reported: a weekday and hour ("Tuesdays around 09:00") where one qualifies, else the
    weekday or the hour alone. A sequence is placed by the start of its first step in each
    supporting session.

    NOTE: slots are in UTC, so a habit at 09:00 local time shows as another hour, and one that
    crosses a daylight saving change splits between two hours.
    """
    found = []
    if data.n_events:
        for slot in _recurring_slots(data.path_ids, data.times, min_weeks, min_share):
            path = data.paths[slot.subject]
            found.append(_recurrence_pattern(("file", path), {"subject": "file", "path": path}, slot))

    if sequence_patterns:
        subjects = np.concatenate(
            [np.full(len(pattern.data["_times"]), index) for index, pattern in enumerate(sequence_patterns)]
        )
        times = np.concatenate([pattern.data["_times"] for pattern in sequence_patterns])
        for slot in _recurring_slots(subjects, times, min_weeks, min_share):
            steps = sequence_patterns[slot.subject].data["steps"]
            found.append(_recurrence_pattern(("sequence", *steps), {"subject": "sequence", "steps": list(steps)}, slot))

    found.sort(key=lambda pattern: (-pattern.score, pattern.identity))
    return found[:limit] if limit else found


@dataclass
class _Slot:
    subject: int
    weekday: int | None
    hour: int | None
    weeks: int
    days: int
    active_days: int
    first_week: int
    last_week: int
    # For a weekday alone: the hour used in most weeks on that weekday, for a schedule.
    usual_hour: int


def _recurring_slots(subjects, times, min_weeks, min_share):
    subjects = np.asarray(subjects, dtype=np.int64)
    days = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
    # 1970-01-01 was a Thursday, so day + 3 counts from a Monday: ISO weeks start on Mondays.
    weeks = (days + 3) // 7
    weekdays = (days + 3) % 7
    hours = ((times - days * SECONDS_PER_DAY) // 3600).astype(np.int64)
    week_zero, day_zero = int(weeks.min()), int(days.min())
    week_index, day_index = weeks - week_zero, days - day_zero
    week_range, day_range = int(week_index.max()) + 1, int(day_index.max()) + 1

    active_subjects, active_days, _, _ = _distinct(subjects, day_index, day_range)
    active_days = dict(zip(active_subjects.tolist(), active_days.tolist(), strict=True))
    slot_kinds = (
        ("both", (subjects * 7 + weekdays) * 24 + hours),
        ("weekday", subjects * 7 + weekdays),
        ("hour", subjects * 24 + hours),
    )
    usual_hour = {}
    covered = set()
    slots = []
    for slot_kind, slot_ids in slot_kinds:
        ids, week_counts, first_weeks, last_weeks = _distinct(slot_ids, week_index, week_range)
        _, day_counts, _, _ = _distinct(slot_ids, day_index, day_range)
        for slot_id, week_count, day_count, first, last in zip(
            ids.tolist(),
            week_counts.tolist(),
            day_counts.tolist(),
            first_weeks.tolist(),
            last_weeks.tolist(),
            strict=True,
        ):
            if slot_kind == "both":
                weekday_slot, hour = divmod(slot_id, 24)
                subject, weekday = divmod(weekday_slot, 7)
                if week_count > usual_hour.get(weekday_slot, (0, 0))[0]:
                    usual_hour[weekday_slot] = (week_count, hour)
            elif slot_kind == "weekday":
                (subject, weekday), hour = divmod(slot_id, 7), None
            else:
                (subject, hour), weekday = divmod(slot_id, 24), None
            if week_count < min_weeks or day_count < min_share * active_days[subject]:
                continue
            # A weekday or an hour already reported with the other (in a "both" slot) is not reported alone.
            if slot_kind != "both" and ((subject, weekday, None) in covered or (subject, None, hour) in covered):
                continue
            if slot_kind == "both":
                covered.update({(subject, weekday, None), (subject, None, hour)})
            usual = hour if hour is not None else usual_hour[subject * 7 + weekday][1]
            slots.append(
                _Slot(
                    subject,
                    weekday,
                    hour,
                    week_count,
                    day_count,
                    active_days[subject],
                    first + week_zero,
                    last + week_zero,
                    usual,
                )
            )
    return slots


def _distinct(slots, index, index_range):
    """Per slot: how many distinct index values (days, weeks) it occurs in, and the first and last of them."""
    keys = sorted_unique(slots * index_range + index)
    slot_of_key = keys // index_range
    index_of_key = keys % index_range
    starts = np.flatnonzero(np.r_[True, slot_of_key[1:] != slot_of_key[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    return slot_of_key[starts], ends - starts, index_of_key[starts], index_of_key[ends - 1]


def _recurrence_pattern(identity_head, subject_data, slot):
    share = slot.days / slot.active_days
    if slot.weekday is not None and slot.hour is not None:
        when = f"{WEEKDAY_NAMES[slot.weekday]}s around {slot.hour:02d}:00 UTC"
        cron = f"0 {slot.hour} * * {(slot.weekday + 1) % 7}"
        identity = (*identity_head, f"weekday={slot.weekday}", f"hour={slot.hour}")
    elif slot.weekday is not None:
        when = f"{WEEKDAY_NAMES[slot.weekday]}s"
        cron = f"0 {slot.usual_hour} * * {(slot.weekday + 1) % 7}"
        identity = (*identity_head, f"weekday={slot.weekday}")
    else:
        when = f"around {slot.hour:02d}:00 UTC"
        cron = f"0 {slot.hour} * * *"
        identity = (*identity_head, f"hour={slot.hour}")
    data = {
        **subject_data,
        "weekday": slot.weekday,
        "weekday_name": None if slot.weekday is None else WEEKDAY_NAMES[slot.weekday],
        "hour": slot.hour,
        "when": when,
        "weeks": slot.weeks,
        "days": slot.days,
        "active_days": slot.active_days,
        "share": round(share, 4),
        "first_week": _week_start(slot.first_week),
        "last_week": _week_start(slot.last_week),
        # Five-field cron in UTC, for a schedule that runs just before the usual time.
        "cron": cron,
    }
    return FoundPattern("recurrence", identity, slot.weeks * share, data)


def _week_start(week):
    """Return the Monday (an ISO date) that starts a week numbered as in `_recurring_slots`."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=week * 7 - 3)).date().isoformat()


# Produced files


def find_produced(data, min_sessions=3, limit=None):
    """Find commands or scripts that are followed, session after session, by new files.

    A command is an event of type command_executed or tool_used, its path the script or command.
    In a session where it runs, every file_created event at or after its first run counts for the
    pair (command, file). A pair seen in at least `min_sessions` sessions is a pattern. Files whose
    names vary (report-1.pdf, report-2.pdf) are also counted by folder and extension (dist/*.pdf).
    Such a glob is reported when it reaches min_sessions and is seen in more sessions than any
    single file under it.
    """
    if data.n_events == 0:
        return []
    command_types = [data.type_id(name) for name in COMMAND_TYPES]
    created_type = data.type_id("file_created")
    if created_type < 0 or max(command_types) < 0:
        return []
    session_of = data.session_of
    is_command = np.isin(data.type_ids, command_types)
    commands = np.flatnonzero(is_command)
    created = np.flatnonzero(data.type_ids == created_type)
    if not len(commands) or not len(created):
        return []

    # The first run of each command in each session (events are in time order within a session).
    n_paths = len(data.paths)
    command_keys = session_of[commands] * n_paths + data.path_ids[commands]
    order = np.argsort(command_keys, kind="stable")
    command_keys = command_keys[order]
    first_of_key = np.r_[True, command_keys[1:] != command_keys[:-1]]
    command_keys, first_index = command_keys[first_of_key], order[first_of_key]
    command_sessions_of = command_keys // n_paths
    command_paths = command_keys % n_paths
    command_times = data.times[commands[first_index]]
    runs_per_command = np.bincount(command_paths, minlength=n_paths)

    # Pair every created file with the commands of its session.
    created_sessions = session_of[created]
    lower = np.searchsorted(command_sessions_of, created_sessions, side="left")
    upper = np.searchsorted(command_sessions_of, created_sessions, side="right")
    lengths = upper - lower
    pair_created = np.repeat(created, lengths)
    pair_command = sequence_mining.expand_ranges(lower, lengths)
    after = data.times[pair_created] >= command_times[pair_command]
    pair_created, pair_command = pair_created[after], pair_command[after]
    product_paths = data.path_ids[pair_created]
    command_path_of_pair = command_paths[pair_command]
    distinct = product_paths != command_path_of_pair
    pair_created, pair_command = pair_created[distinct], pair_command[distinct]
    product_paths, command_path_of_pair = product_paths[distinct], command_path_of_pair[distinct]
    delays = data.times[pair_created] - command_times[pair_command]
    pair_sessions = command_sessions_of[pair_command]

    globs = [_product_glob(path) for path in data.paths]
    glob_names = sorted(set(globs))
    glob_index = {name: index for index, name in enumerate(glob_names)}
    glob_of_path = np.array([glob_index[name] for name in globs], dtype=np.int64)

    exact = _count_product_sessions(command_path_of_pair, product_paths, pair_sessions, delays)
    by_glob = _count_product_sessions(command_path_of_pair, glob_of_path[product_paths], pair_sessions, delays)

    def command_event_type(command):
        types = data.type_ids[commands[data.path_ids[commands] == command]]
        return data.types[int(np.bincount(types).argmax())]

    def pattern(command, product, match, sessions, delay, examples):
        runs = int(runs_per_command[command])
        share = sessions / runs
        pattern_data = {
            "command": data.paths[command],
            "command_event_type": command_event_type(command),
            "product": product,
            "match": match,
            "sessions": sessions,
            "command_sessions": runs,
            "share": round(share, 4),
            "median_delay_seconds": round(delay, 1),
            "examples": examples,
        }
        return FoundPattern("produced", (data.paths[command], product, match), sessions * share, pattern_data)

    found = []
    best_exact_in_glob = {}
    for command, product, sessions, delay in exact:
        glob_key = (command, int(glob_of_path[product]))
        best_exact_in_glob[glob_key] = max(best_exact_in_glob.get(glob_key, 0), sessions)
        if sessions >= min_sessions:
            found.append(pattern(command, data.paths[product], "exact", sessions, delay, [data.paths[product]]))
    for command, glob, sessions, delay in by_glob:
        if sessions < min_sessions or sessions <= best_exact_in_glob.get((command, glob), 0):
            continue
        in_glob = (command_path_of_pair == command) & (glob_of_path[product_paths] == glob)
        examples = sorted(data.paths[member] for member in sorted_unique(product_paths[in_glob]))
        found.append(pattern(command, glob_names[glob], "glob", sessions, delay, examples[:PRODUCED_EXAMPLES]))
    found.sort(key=lambda pattern: (-pattern.score, pattern.identity))
    return found[:limit] if limit else found


def _count_product_sessions(commands, products, sessions, delays):
    """Yield (command, product, sessions, median delay), the delay being each session's first product's."""
    order = np.lexsort((delays, sessions, products, commands))
    commands, products, sessions, delays = commands[order], products[order], sessions[order], delays[order]
    new_pair = np.ones(len(order), dtype=bool)
    new_pair[1:] = (commands[1:] != commands[:-1]) | (products[1:] != products[:-1])
    first_in_session = new_pair.copy()
    first_in_session[1:] |= sessions[1:] != sessions[:-1]
    commands, products, delays, new_pair = (
        commands[first_in_session],
        products[first_in_session],
        delays[first_in_session],
        new_pair[first_in_session],
    )
    starts = np.flatnonzero(new_pair)
    ends = np.append(starts[1:], len(commands))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(commands[start]), int(products[start]), end - start, float(np.median(delays[start:end]))


def _product_glob(path):
    folder, name = posixpath.split(path)
    stem, extension = posixpath.splitext(name)
    pattern = f"*{extension}" if stem else "*"
    return posixpath.join(folder, pattern) if folder else pattern


# Everything


def analyze(data, settings, now):
    """Run every finder on the sessions; `now` is an aware datetime for the 7- and 30-day counts."""
    limit = settings.max_patterns_per_kind
    patterns = find_frequent(data, now.timestamp(), settings.frequent_top_n)
    patterns += find_co_used(
        data,
        max_session_files=settings.coupling_max_session_files,
        min_revs=settings.coupling_min_revs,
        min_shared=settings.coupling_min_shared,
        min_degree=settings.coupling_min_degree,
        limit=limit,
    )
    sequence_patterns, sequence_support = find_sequences(
        data,
        min_support=settings.sequence_min_support,
        max_length=settings.sequence_max_length,
        max_gap_minutes=settings.sequence_max_gap_minutes,
        limit=limit,
    )
    patterns += sequence_patterns
    patterns += find_recurrence(data, sequence_patterns, min_weeks=settings.recurrence_min_weeks, limit=limit)
    patterns += find_produced(data, min_sessions=settings.produced_min_sessions, limit=limit)
    for pattern in sequence_patterns:
        pattern.data.pop("_sessions")
        pattern.data.pop("_times")
    return AnalysisResult(
        patterns=patterns,
        events=data.n_events,
        sessions=data.n_sessions,
        first_time=float(data.times.min()) if data.n_events else None,
        last_time=float(data.times.max()) if data.n_events else None,
        sequence_min_support=sequence_support,
    )


def _iso(seconds):
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
