"""Analysis benchmark: our co-used pairs and sequences against mlxtend's fpgrowth and `prefixspan`.

Run from the repository root (the extra packages are in bench/requirements.txt):

    python -m bench.analysis

It generates seeded synthetic events: a vocabulary of files with Zipf-like popularity, planted
co-used pairs, step chains, commands that produce files and weekly habits. It groups them into
sessions with the app's SessionBuilder, then times in one run, on the same sessions:
- pairs of files sharing at least --min-shared sessions (sessions of at most 30 files): ours
  (`count_pairs`, and `find_co_used` with the degree) against mlxtend's fpgrowth with max_len=2
  at the same minimum support;
- frequent sequences of up to --max-length steps with at least --sequence-min-support sessions:
  ours (`mine_frequent`) against PrefixSpan.frequent from the `prefixspan` package. Both count a
  session once per sequence with steps in order, not necessarily adjacent; ours runs with the gap
  limit disabled here, since prefixspan has none;
- the whole pure analysis (`analyze`, with the default settings, gap limit included);
- unless --no-database: run_analysis on a fresh SQLite file (or --database-url), events loaded
  from the database and patterns and suggestions written back.
It checks that the pair sets and counts and the sequence sets and supports are equal, and prints
the times and the ratios (their time / ours; the target is at least 1).
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata

import numpy as np

from app.insights import analysis, sequences

EVENT_TYPES = ("file_modified", "file_opened", "file_created")
EVENT_TYPE_WEIGHTS = (0.8, 0.15, 0.05)
TOOLS = ("vscode", "vim", "excel", "python", "jupyter")
FOLDERS = ("src/app", "src/lib", "tests", "docs", "data/raw", "data/clean", "notebooks", "reports", "config")
EXTENSIONS = (".py", ".py", ".py", ".md", ".csv", ".ipynb", ".json", ".yaml", ".txt")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="Events to generate (about).")
    parser.add_argument("--sessions", type=int, default=50_000, help="Sessions to generate.")
    parser.add_argument("--files", type=int, default=5_000, help="Distinct files in the vocabulary.")
    parser.add_argument("--users", type=int, default=25, help="Users the sessions are spread over.")
    parser.add_argument("--seed", type=int, default=7, help="Random seed.")
    parser.add_argument("--min-shared", type=int, default=5, help="Minimum shared sessions of a pair.")
    parser.add_argument(
        "--sequence-min-support", type=int, default=1000, help="Minimum sessions of a frequent sequence."
    )
    parser.add_argument("--max-length", type=int, default=4, help="Maximum sequence length, in steps.")
    parser.add_argument("--no-database", action="store_true", help="Skip run_analysis on a database.")
    parser.add_argument(
        "--database-url",
        default="",
        help=(
            "Database for run_analysis: a PostgreSQL URL (the database is created and dropped) "
            "or a SQLite URL of a new file; default: a SQLite file in a temporary folder."
        ),
    )
    return parser.parse_args()


# Synthetic events


def make_vocabulary(count, rng):
    paths = []
    for index in range(count):
        folder = FOLDERS[int(rng.integers(len(FOLDERS)))]
        paths.append(f"{folder}/part{index % 37}/file{index}{EXTENSIONS[index % len(EXTENSIONS)]}")
    return paths


def generate(args):
    """Return event rows (user_id, session, seconds, type, path, tool) as SessionBuilder takes them.

    Per user, a session starts at least two hours after the previous one started. Sessions last
    well under 90 minutes, because steps are 1 second plus an exponential with a mean of 45 seconds
    apart, so the per-user split at 30-minute gaps finds them again. A third of the sessions carry
    a `session` value instead, as git commits do.
    """
    rng = np.random.default_rng(args.seed)
    paths = make_vocabulary(args.files, rng)
    popularity = 1.0 / np.arange(1, args.files + 1) ** 1.1
    popularity = rng.permutation(popularity / popularity.sum())
    by_popularity = np.argsort(-popularity)
    # Planted structures use files of middling popularity, so they are not frequent by chance alone.
    middling = by_popularity[200:2000]
    pairs = middling[:80].reshape(40, 2)
    chains = middling[80:160].reshape(20, 4)
    commands = [f"tools/build_{index}.py" for index in range(10)]

    mean_length = max(2.0, args.events / args.sessions)
    lengths = np.maximum(2, rng.poisson(mean_length - 2, args.sessions) + 1)
    user_of_session = rng.integers(args.users, size=args.sessions)
    year_start = datetime(2025, 1, 6, tzinfo=UTC).timestamp()
    start_of_session = np.zeros(args.sessions)
    for user in range(args.users):
        mine = np.flatnonzero(user_of_session == user)
        spacing = 7200 + rng.exponential(365 * 86400 / max(1, len(mine)), len(mine))
        start_of_session[mine] = year_start + np.cumsum(spacing)

    rows = []
    for session in range(args.sessions):
        steps = list(rng.choice(args.files, size=int(lengths[session]), p=popularity))
        if rng.random() < 0.3:
            first, second = pairs[rng.integers(len(pairs))]
            steps.insert(int(rng.integers(len(steps) + 1)), first)
            steps.insert(int(rng.integers(len(steps) + 1)), second)
        if rng.random() < 0.25:
            chain = chains[rng.integers(len(chains))][: int(rng.integers(3, 5))]
            position = int(rng.integers(len(steps) + 1))
            steps[position:position] = list(chain)
        user = int(user_of_session[session])
        session_value = f"c{session:06d}" if session % 3 == 0 else None
        start = start_of_session[session]
        times = start + np.cumsum(1 + rng.exponential(45, len(steps)))
        types = rng.choice(len(EVENT_TYPES), size=len(steps), p=EVENT_TYPE_WEIGHTS)
        tools = rng.integers(len(TOOLS), size=len(steps))
        for step, at, type_index, tool_index in zip(steps, times, types, tools, strict=True):
            rows.append((user, session_value, float(at), EVENT_TYPES[type_index], paths[step], TOOLS[tool_index]))
        last = float(times[-1])
        if rng.random() < 0.05:
            command = commands[int(rng.integers(len(commands)))]
            rows.append((user, session_value, last + 5, "command_executed", command, "python"))
            rows.append((user, session_value, last + 30, "file_created", f"out/{command[6:-3]}/report.pdf", "python"))
            rows.append(
                (user, session_value, last + 31, "file_created", f"out/{command[6:-3]}/log-{session}.txt", "python")
            )
        weekday = int((start // 86400 + 3) % 7)
        if weekday == 0 and 8 <= (start % 86400) // 3600 < 10:
            rows.append((user, session_value, last + 40, "file_modified", f"reports/weekly-{user}.md", "vscode"))
    return rows


# Measurements


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def transactions(data, max_session_files):
    """Return the sessions of at most max_session_files files as a sparse boolean session × file matrix."""
    from scipy import sparse

    n_paths = len(data.paths)
    keys = sequences.sorted_unique(data.session_of * n_paths + data.path_ids)
    session_of_key, path_of_key = keys // n_paths, keys % n_paths
    files_in_session = np.bincount(session_of_key, minlength=data.n_sessions)
    keep = files_in_session[session_of_key] <= max_session_files
    matrix = sparse.csr_matrix(
        (np.ones(np.count_nonzero(keep), dtype=bool), (session_of_key[keep], path_of_key[keep])),
        shape=(data.n_sessions, n_paths),
    )
    return matrix[np.flatnonzero((files_in_session > 0) & (files_in_session <= max_session_files))]


def compare_pairs(data, args, results):
    import pandas as pd
    from mlxtend.frequent_patterns import fpgrowth

    counts, ours = timed(analysis.count_pairs, data, 30, args.min_shared)
    coupled, ours_with_degree = timed(
        analysis.find_co_used, data, max_session_files=30, min_revs=5, min_shared=args.min_shared, min_degree=30.0
    )
    matrix, encoding = timed(transactions, data, 30)
    frame, framing = timed(pd.DataFrame.sparse.from_spmatrix, matrix)
    total = matrix.shape[0]
    itemsets, theirs = timed(fpgrowth, frame, min_support=args.min_shared / total, max_len=2)

    ours_pairs = {
        frozenset((int(a), int(b))): int(shared)
        for a, b, shared in zip(counts.first, counts.second, counts.shared, strict=True)
    }
    their_pairs = {
        frozenset(int(item) for item in itemset): round(support * total)
        for support, itemset in zip(itemsets["support"], itemsets["itemsets"], strict=True)
        if len(itemset) == 2
    }
    same = ours_pairs == their_pairs
    print(f"pairs with >= {args.min_shared} shared sessions, over {total:,} sessions of <= 30 files:")
    print(f"  ours (count_pairs, X^T X)           {ours:8.2f} s   {len(ours_pairs):,} pairs")
    print(f"  ours with the degree (find_co_used) {ours_with_degree:8.2f} s   {len(coupled):,} coupled pairs")
    print(f"  mlxtend fpgrowth, max_len=2         {theirs:8.2f} s   {len(their_pairs):,} pairs")
    print(f"  (encoding for mlxtend: matrix {encoding:.2f} s, DataFrame {framing:.2f} s, not counted)")
    print(f"  same pairs and counts: {same}; fpgrowth / ours = {theirs / ours_with_degree:.1f}")
    results.update(pairs_same=same, pairs_ratio=theirs / ours_with_degree)


def compare_sequences(data, args, results):
    from prefixspan import PrefixSpan

    positions, preparing = timed(sequences.Positions, data.path_ids, data.times, data.offsets, None)
    (mined, _), mining = timed(sequences.mine_frequent, positions, args.sequence_min_support, args.max_length)
    ours = preparing + mining

    bounds = np.searchsorted(positions.sessions, np.arange(data.n_sessions + 1))
    database = [positions.items[start:end].tolist() for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    search = PrefixSpan(database)
    search.maxlen = args.max_length
    found, theirs = timed(search.frequent, args.sequence_min_support)
    their_sequences = {tuple(pattern): support for support, pattern in found}

    gapped, with_gap = timed(
        analysis.find_sequences, data, min_support=args.sequence_min_support, max_length=args.max_length, limit=200
    )
    same = mined == their_sequences
    print(
        f"frequent sequences of 1 to {args.max_length} steps in >= {args.sequence_min_support:,} sessions, "
        "no gap limit:"
    )
    print(f"  ours (Positions + mine_frequent)    {ours:8.2f} s   {len(mined):,} sequences")
    print(f"  prefixspan PrefixSpan.frequent      {theirs:8.2f} s   {len(their_sequences):,} sequences")
    print(f"  same sequences and supports: {same}; prefixspan / ours = {theirs / ours:.1f}")
    print(f"  (ours with the 10-minute gap, the 200 strongest closed ones described: {with_gap:.2f} s)")
    results.update(sequences_same=same, sequences_ratio=theirs / ours)


def run_full_analysis(data):
    result, seconds = timed(analysis.analyze, data, analysis.AnalysisSettings(), datetime.now(UTC))
    kinds = {}
    for pattern in result.patterns:
        kinds[pattern.kind] = kinds.get(pattern.kind, 0) + 1
    print(f"whole pure analysis, default settings: {seconds:.2f} s")
    print(f"  patterns: {', '.join(f'{kind} {count}' for kind, count in sorted(kinds.items()))}")
    print(f"  sequence support used: {result.sequence_min_support} (setting 3, raised to keep <= 5,000 sequences)")


def run_on_database(rows, args):
    """Store the rows as events of one organization and time run_analysis on them.

    A PostgreSQL --database-url names a database that is created here (dropped first if it
    exists) and dropped at the end; the default is a SQLite file in a temporary folder.
    """
    os.environ.setdefault("SECRET_KEY", "bench")
    from app import create_app
    from app.extensions import db
    from app.insights import service

    folder = tempfile.mkdtemp(prefix="floyo-bench-analysis-")
    url = args.database_url or f"sqlite:///{folder}/bench.db"
    postgres = url.startswith("postgresql")
    if postgres:
        url = _recreate_postgres_database(url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "INSTANCE_PATH": folder, "REDIS_URL": ""})
    with app.app_context():
        db.create_all()
        org_id, user_ids = _create_users(args.users)
        started = time.perf_counter()
        _store_events(db, org_id, user_ids, rows, postgres)
        storing = time.perf_counter() - started
        print(f"run_analysis on {db.engine.dialect.name}: {len(rows):,} events stored in {storing:.1f} s (not counted)")

        summary, seconds = timed(service.run_analysis, org_id)
        print(
            f"  run_analysis (load, analyse, store): {seconds:.2f} s; "
            f"{sum(summary.patterns_by_kind.values())} patterns, {summary.suggestions} suggestions"
        )
        summary, seconds = timed(service.run_analysis, org_id)
        print(f"  again, updating in place: {seconds:.2f} s")
        db.session.remove()
        db.engine.dispose()
    if postgres:
        _drop_postgres_database(url)
    shutil.rmtree(folder, ignore_errors=True)


def _create_users(count):
    """Create `count` users; events of all of them go to the first one's personal organization."""
    from app.auth import service as auth_service
    from app.extensions import db
    from app.orgs.service import personal_org

    users = [auth_service.create_user(f"bench{index}@example.com", "benchmark password") for index in range(count)]
    db.session.commit()
    return personal_org(users[0]).id, [user.id for user in users]


def _store_events(db, org_id, user_ids, rows, postgres):
    from app.events.models import Event

    received = datetime.now(UTC)
    columns = (
        "org_id",
        "user_id",
        "type",
        "path",
        "tool",
        "occurred_at",
        "session",
        "metadata",
        "source",
        "received_at",
    )

    def values():
        for user, session, seconds, event_type, path, tool in rows:
            at = datetime.fromtimestamp(seconds, UTC)
            yield (org_id, user_ids[user], event_type, path, tool, at, session, "{}", "api", received)

    if postgres:
        # COPY, because this is set-up, not what is measured.
        cursor = db.session.connection().connection.driver_connection.cursor()
        with cursor.copy(f"COPY events ({', '.join(columns)}) FROM STDIN") as copy:
            for row in values():
                copy.write_row(row)
    else:
        chunk = []
        for row in values():
            chunk.append({**dict(zip(columns, row, strict=True)), "metadata": {}})
            if len(chunk) == 50_000:
                db.session.execute(Event.__table__.insert(), chunk)
                chunk.clear()
        if chunk:
            db.session.execute(Event.__table__.insert(), chunk)
    db.session.commit()


def _recreate_postgres_database(url):
    import sqlalchemy as sa

    target = sa.engine.make_url(url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    return target.render_as_string(hide_password=False)


def _drop_postgres_database(url):
    import sqlalchemy as sa

    target = sa.engine.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


def describe_machine():
    versions = ", ".join(
        f"{package} {metadata.version(package)}" for package in ("numpy", "scipy", "pandas", "mlxtend", "prefixspan")
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}; {versions}")


def main():
    args = parse_args()
    describe_machine()
    rows, generating = timed(generate, args)
    data, grouping = timed(analysis.build_sessions, rows, 30)
    print(f"generated {len(rows):,} events in {generating:.1f} s")
    print(f"grouped into {data.n_sessions:,} sessions in {grouping:.2f} s")

    results = {}
    compare_pairs(data, args, results)
    compare_sequences(data, args, results)
    run_full_analysis(data)
    if not args.no_database:
        run_on_database(rows, args)

    print(
        f"summary: pairs same={results['pairs_same']} ratio={results['pairs_ratio']:.1f}; "
        f"sequences same={results['sequences_same']} ratio={results['sequences_ratio']:.1f} (target: >= 1)"
    )
    if not (results["pairs_same"] and results["sequences_same"]):
        sys.exit("results differ")


if __name__ == "__main__":
    main()
