"""Sequence mining: ordered steps that many sessions share, with a limit on the time between steps.

Definitions, on sessions whose events are in time order:
- A step is an event's path; immediate repeats of the same path in a session collapse into one
  step that lasts from the first repeat to the last.
- A sequence of k steps (A, B, ...) occurs in a session when the session has those steps in that
  order, not necessarily adjacent, each starting strictly later than the previous one ends and at
  most `max_gap` seconds after it (None: no limit). Steps of one instant are not ordered, which
  is why the files of one git commit form no sequence.
- Its support is the number of sessions in which it occurs. With max_gap None this is the support
  that PrefixSpan computes; bench/analysis.py checks that `prefixspan` 0.5.2 finds the same.
- Reported are the closed sequences of 2 or more steps: those with no one-step-longer frequent
  sequence of the same support. All frequent sequences would repeat every part of one habit
  (A→B, B→C, A→C and A→B→C with one support); maximal ones would hide a strong A→B behind a rare
  A→B→C. The strongest `limit` are kept, by support, then length.

The search is PrefixSpan with pseudo-projection on numpy arrays: a prefix is represented by the
positions where its occurrences end, and the next step is searched for in each position's window.
"""

from dataclasses import dataclass

import numpy as np

# Frequent sequences one search keeps; beyond it the minimum support rises (see _Threshold). The
# bound keeps a large organization with a low SEQUENCE_MIN_SUPPORT from mining millions of them.
MAX_FREQUENT_SEQUENCES = 5_000


@dataclass
class Sequence:
    items: tuple  # path ids
    support: int
    sessions: np.ndarray  # indices of the supporting sessions
    first_times: np.ndarray  # per supporting session: when the first step of the tightest occurrence started
    median_gap: float  # seconds; see find_closed_sequences
    # Sessions with the first step: support / first_step_support is the confidence of the rest.
    first_step_support: int


@dataclass
class MinedSequences:
    sequences: list
    # The support used: the requested one, or higher if that found more than the bound allows.
    min_support: int
    frequent_count: int


class Positions:
    """The collapsed steps of all sessions and, per step, the window where the next step may be."""

    def __init__(self, path_ids, times, offsets, max_gap):
        n_events = len(path_ids)
        session_of = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
        run_start = np.ones(n_events, dtype=bool)
        run_start[1:] = (path_ids[1:] != path_ids[:-1]) | (session_of[1:] != session_of[:-1])
        starts = np.flatnonzero(run_start)
        ends = np.r_[starts[1:], n_events] - 1

        self.items = np.asarray(path_ids[starts], dtype=np.int64)
        self.first_times = times[starts]
        self.last_times = times[ends]
        self.sessions = session_of[starts]
        self.count = len(starts)

        # Ranks of start times make a key that increases with the position, so that one binary
        # search over all sessions finds each window exactly: first position starting strictly
        # after this step ends (`low`), first position starting more than max_gap after it (`high`).
        distinct_times = sorted_unique(self.first_times)
        stride = len(distinct_times) + 1
        key = self.sessions * stride + np.searchsorted(distinct_times, self.first_times)
        after = np.searchsorted(distinct_times, self.last_times, side="right")
        self.low = np.searchsorted(key, self.sessions * stride + after, side="left")
        if max_gap is None:
            self.high = np.searchsorted(self.sessions, self.sessions, side="right")
        else:
            within = np.searchsorted(distinct_times, self.last_times + max_gap, side="right")
            self.high = np.searchsorted(key, self.sessions * stride + within, side="left")
        self.earliest_only = max_gap is None

        # The previous position of the same item in the same session (-1 if none), for `supports`.
        by_item = np.lexsort((np.arange(self.count), self.items))
        same = np.r_[
            False,
            (self.items[by_item[1:]] == self.items[by_item[:-1]])
            & (self.sessions[by_item[1:]] == self.sessions[by_item[:-1]]),
        ]
        self.previous_same = np.full(self.count, -1, dtype=np.int64)
        self.previous_same[by_item[same]] = by_item[np.flatnonzero(same) - 1]
        # Marks the current candidates; the extra last element stands for "no previous position".
        self._marked = np.zeros(self.count + 1, dtype=bool)
        self.n_items = int(self.items.max()) + 1 if self.count else 0
        self.n_sessions = len(offsets) - 1

    def candidates(self, ends):
        """Return the positions in the windows after `ends` (sorted positions), each once, in order.

        Windows of one session are [low, high) with both bounds non-decreasing along the session,
        so the part of a window not covered by the previous one starts at max(low, previous high):
        those parts are disjoint and their union is the union of the windows.
        """
        if self.earliest_only:
            # Without a gap limit a session's first end has the widest window, and it covers the rest.
            sessions = self.sessions[ends]
            ends = ends[_starts_of_runs(sessions)]
        low = self.low[ends]
        high = self.high[ends]
        if not self.earliest_only and len(ends) > 1:
            sessions = self.sessions[ends]
            same_session = sessions[1:] == sessions[:-1]
            low[1:] = np.where(same_session, np.maximum(low[1:], high[:-1]), low[1:])
        lengths = np.maximum(high - low, 0)
        return expand_ranges(low, lengths)

    def supports(self, candidates):
        """Return the support of every item among the candidates: the sessions in which it is one."""
        if self.earliest_only:
            # A session's candidates are one run of positions (its first end's window), so an item
            # is counted at its first candidate: the one whose previous same-item position is not one.
            self._marked[candidates] = True
            first_in_session = ~self._marked[self.previous_same[candidates]]
            self._marked[candidates] = False
            return np.bincount(self.items[candidates[first_in_session]], minlength=self.n_items)
        # With gaps, windows can leave holes between candidates, so (item, session) pairs are sorted.
        pairs = sorted_unique(self.items[candidates] * self.n_sessions + self.sessions[candidates])
        return np.bincount(pairs // self.n_sessions, minlength=self.n_items)


class _Threshold:
    """The minimum support, raised while mining so that at most `max_count` sequences are kept.

    When more than max_count sequences reach the threshold, every sequence of the lowest support
    is dropped and the threshold rises above it. Support only falls as a sequence grows, so every
    sequence at or above the final threshold is still found: its prefixes were never pruned.
    """

    def __init__(self, min_support, max_count):
        self.value = min_support
        self.max_count = max_count
        self.count_by_support = {}
        self.total = 0

    def add(self, support):
        if self.max_count is None:
            return
        self.count_by_support[support] = self.count_by_support.get(support, 0) + 1
        self.total += 1
        while self.total > self.max_count:
            lowest = min(self.count_by_support)
            self.total -= self.count_by_support.pop(lowest)
            self.value = lowest + 1


def mine_frequent(positions, min_support, max_length, max_count=None):
    """Return ({items: support}, threshold) for the sequences of 1 to max_length steps that are frequent.

    Frequent means a support of at least min_support, raised as `_Threshold` describes when more
    than max_count sequences would be found; the threshold used is returned with them.
    """
    frequent = {}
    threshold = _Threshold(max(1, min_support), max_count)

    def extend(prefix, candidates, support):
        frequent_items = np.flatnonzero(support >= threshold.value)
        if not len(frequent_items):
            return
        # The candidates of frequent items, sorted by item and then position, so each child's
        # occurrence ends are one slice.
        is_frequent = np.zeros(positions.n_items, dtype=bool)
        is_frequent[frequent_items] = True
        chosen = candidates[is_frequent[positions.items[candidates]]]
        chosen = chosen[np.argsort(positions.items[chosen], kind="stable")]
        chosen_items = positions.items[chosen]
        # Children with the highest support first, so that a capped threshold rises early.
        for item in sorted(frequent_items.tolist(), key=lambda i: -support[i]):
            if support[item] < threshold.value:
                break
            pattern = (*prefix, item)
            frequent[pattern] = int(support[item])
            threshold.add(int(support[item]))
            if len(pattern) == max_length:
                continue
            ends = chosen[np.searchsorted(chosen_items, item, "left") : np.searchsorted(chosen_items, item, "right")]
            following = positions.candidates(ends)
            if len(following):
                extend(pattern, following, positions.supports(following))

    if positions.count:
        everything = np.arange(positions.count, dtype=np.int64)
        extend((), everything, positions.supports(everything))
    kept = {pattern: support for pattern, support in frequent.items() if support >= threshold.value}
    return kept, threshold.value


def closed_sequences(frequent, min_length=2):
    """Return the closed sequences of min_length or more steps.

    A sequence is closed when no frequent sequence one step longer that contains it has the same support.
    """
    absorbed = set()
    for pattern, support in frequent.items():
        for index in range(len(pattern)):
            shorter = pattern[:index] + pattern[index + 1 :]
            if frequent.get(shorter) == support:
                absorbed.add(shorter)
    return [pattern for pattern in frequent if len(pattern) >= min_length and pattern not in absorbed]


def occurrences(positions, items, positions_of_item):
    """Find, per session, the tightest occurrence of a sequence.

    Returns (sessions, first step start times, spans): the span is the time from the end of the
    first step to the start of the last. Of several occurrences ending at one position, the one
    whose first step is latest is kept.
    """
    ends = positions_of_item(items[0])
    first = ends.copy()
    for item in items[1:]:
        targets = positions_of_item(item)
        if not len(ends) or not len(targets):
            ends = first = np.zeros(0, dtype=np.int64)
            break
        # Window bounds never decrease along the sorted ends, so the ends whose window holds a
        # target are one run: those with high > target, up to those with low <= target.
        begin = np.searchsorted(positions.high[ends], targets, side="right")
        stop = np.searchsorted(positions.low[ends], targets, side="right")
        reachable = begin < stop
        targets, begin, stop = targets[reachable], begin[reachable], stop[reachable]
        if not len(targets):
            ends = first = np.zeros(0, dtype=np.int64)
            break
        bounds = np.empty(2 * len(targets), dtype=np.intp)
        bounds[0::2] = begin
        bounds[1::2] = stop
        # The latest first step over each run; the padding keeps every bound a valid index.
        first = np.maximum.reduceat(np.append(first, 0), bounds)[0::2]
        ends = targets
    spans = positions.first_times[ends] - positions.last_times[first]
    sessions = positions.sessions[ends]
    order = np.lexsort((spans, sessions))
    sessions, spans, first = sessions[order], spans[order], first[order]
    tightest = _starts_of_runs(sessions)
    return sessions[tightest], positions.first_times[first[tightest]], spans[tightest]


def find_closed_sequences(path_ids, times, offsets, min_support, max_length, max_gap, limit=None, names=None):
    """Mine the closed sequences (see the module docstring) and describe the strongest `limit` of them.

    `names` (path per id) breaks ties in the ranking, so that the same data keeps the same top
    sequences. The median gap of a sequence is the median, over its supporting sessions, of the
    tightest occurrence's span divided by its number of gaps (steps - 1).
    """
    positions = Positions(path_ids, times, offsets, max_gap)
    frequent, support = mine_frequent(positions, min_support, max_length, MAX_FREQUENT_SEQUENCES)

    def rank(pattern):
        labels = tuple(names[item] for item in pattern) if names is not None else pattern
        return (-frequent[pattern], -len(pattern), labels)

    chosen = sorted(closed_sequences(frequent), key=rank)
    if limit:
        chosen = chosen[:limit]

    by_item = np.argsort(positions.items, kind="stable")
    sorted_items = positions.items[by_item]

    def positions_of_item(item):
        return by_item[np.searchsorted(sorted_items, item, "left") : np.searchsorted(sorted_items, item, "right")]

    found = []
    for pattern in chosen:
        sessions, first_times, spans = occurrences(positions, pattern, positions_of_item)
        median_gap = float(np.median(spans)) / (len(pattern) - 1) if len(spans) else 0.0
        found.append(Sequence(pattern, frequent[pattern], sessions, first_times, median_gap, frequent[pattern[:1]]))
    return MinedSequences(found, support, len(frequent))


def expand_ranges(starts, lengths):
    """Concatenate the ranges starts[i] .. starts[i] + lengths[i] - 1 into one index array."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    begins = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(begins, lengths) + np.repeat(starts, lengths)


def sorted_unique(values):
    """Return the distinct values in ascending order.

    numpy 2.4's np.unique hashes and runs about a hundred times slower than a sort on a million
    integers, so this sorts.
    """
    ordered = np.sort(values)
    return ordered[_starts_of_runs(ordered)]


def _starts_of_runs(values):
    """Return a mask of the elements that differ from the one before (the first always does)."""
    starts = np.ones(len(values), dtype=bool)
    np.not_equal(values[1:], values[:-1], out=starts[1:])
    return starts
