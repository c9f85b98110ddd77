"""Readiness checks, and what the monitoring page shows about Redis and the database."""

import functools
import logging
from pathlib import Path

import redis
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.config import BASE_DIR
from app.extensions import db
from app.queue import get_queues

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = BASE_DIR / "migrations"
# Rate-limit keys read for the cache page; a SCAN stops after this many so the page stays quick.
MAX_RATE_LIMIT_KEYS = 200
LARGEST_TABLES = 15
SLOWEST_QUERIES = 10


@functools.cache
def migration_heads(directory=MIGRATIONS_DIR):
    """Return the head revisions of the migration scripts; they cannot change while the process runs."""
    config = Config()
    config.set_main_option("script_location", str(Path(directory)))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def readiness():
    """Check the database, Redis and the migrations; return (ready, {check: {"ok", "error"?...}})."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    checks["migrations"] = (
        _check_migrations()
        if checks["database"]["ok"]
        else {
            "ok": False,
            "error": "Not checked: the database is unreachable.",
        }
    )
    return all(check["ok"] for check in checks.values()), checks


def _check_database():
    try:
        db.session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as error:
        db.session.rollback()
        logger.warning("readiness: database failed: %s", error)
        return {"ok": False, "error": f"The database is unreachable: {_first_line(error)}"}
    return {"ok": True}


def _check_redis():
    try:
        get_queues().connection.ping()
    except redis.RedisError as error:
        logger.warning("readiness: redis failed: %s", error)
        return {"ok": False, "error": f"Redis is unreachable: {_first_line(error)}"}
    return {"ok": True}


def _check_migrations():
    heads = migration_heads()
    try:
        current = set(db.session.scalars(sa.text("SELECT version_num FROM alembic_version")).all())
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        current = set()
    result = {"ok": current == heads, "current": sorted(current), "head": sorted(heads)}
    if not result["ok"]:
        shown = ", ".join(sorted(current)) or "none"
        result["error"] = (
            f"The database is at revision {shown}, the code expects {', '.join(sorted(heads))}. Run 'flask db upgrade'."
        )
    return result


def cache_info():
    """Describe Redis: memory, keys, hit rate and the current rate-limit counters."""
    connection = get_queues().connection
    info = {}
    try:
        info = connection.info()
    except (redis.RedisError, NotImplementedError) as error:
        logger.warning("cache info: INFO failed: %s", error)
    hits = info.get("keyspace_hits")
    misses = info.get("keyspace_misses")
    rate_limits = []
    for key in connection.scan_iter(match="floyo:ratelimit:*", count=100):
        if len(rate_limits) >= MAX_RATE_LIMIT_KEYS:
            break
        name, _, window = key.decode().removeprefix("floyo:ratelimit:").rpartition(":")
        rate_limits.append({"name": name, "window": window, "count": int(connection.get(key) or 0)})
    rate_limits.sort(key=lambda row: row["count"], reverse=True)
    return {
        "embedded": get_queues().embedded,
        "version": info.get("redis_version"),
        "used_memory_bytes": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "max_memory_bytes": info.get("maxmemory"),
        "keys": connection.dbsize(),
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits is not None and misses and hits + misses else None,
        "connected_clients": info.get("connected_clients"),
        "rate_limits": rate_limits,
    }


def database_info():
    """Describe the database: connections, table and index sizes, row counts and slow queries where known."""
    engine = db.engine
    pool = engine.pool
    result = {
        "dialect": engine.dialect.name,
        "pool": {"size": _call(pool, "size"), "checked_out": _call(pool, "checkedout"), "status": pool.status()},
        "notes": [],
    }
    if engine.dialect.name == "postgresql":
        result.update(_postgres_info(result["notes"]))
    elif engine.dialect.name == "sqlite":
        result.update(_sqlite_info(result["notes"]))
    return result


def _postgres_info(notes):
    connections = db.session.execute(
        sa.text(
            "SELECT state, COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " GROUP BY state ORDER BY 2 DESC"
        )
    ).all()
    tables = db.session.execute(
        sa.text(
            "SELECT c.relname, c.reltuples::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid),"
            " pg_total_relation_size(c.oid), COALESCE(s.n_live_tup, 0)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()"
            " ORDER BY pg_total_relation_size(c.oid) DESC LIMIT :limit"
        ),
        {"limit": LARGEST_TABLES},
    ).all()
    table_rows = [
        {
            "table": name,
            # reltuples is -1 for a table never analysed; n_live_tup from the statistics collector then.
            "rows_estimate": estimate if estimate >= 0 else live,
            "table_bytes": table_bytes,
            "index_bytes": index_bytes,
            "total_bytes": total_bytes,
        }
        for name, estimate, table_bytes, index_bytes, total_bytes, live in tables
    ]
    indexes = db.session.execute(
        sa.text(
            "SELECT indexrelname, relname, pg_relation_size(indexrelid), idx_scan FROM pg_stat_user_indexes"
            " ORDER BY pg_relation_size(indexrelid) DESC LIMIT :limit"
        ),
        {"limit": LARGEST_TABLES},
    ).all()
    return {
        "database_bytes": db.session.scalar(sa.text("SELECT pg_database_size(current_database())")),
        "connections": [{"state": state or "unknown", "count": count} for state, count in connections],
        "tables": table_rows,
        "indexes": [
            {"index": name, "table": table, "bytes": size, "scans": scans} for name, table, size, scans in indexes
        ],
        "slow_queries": _slow_queries(notes),
    }


def _slow_queries(notes):
    installed = db.session.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"))
    if not installed:
        notes.append(
            "Slow queries are not available: the pg_stat_statements extension is not installed. Add it to "
            "shared_preload_libraries and run CREATE EXTENSION pg_stat_statements."
        )
        return None
    try:
        rows = db.session.execute(
            sa.text(
                "SELECT query, calls, mean_exec_time, total_exec_time FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " ORDER BY mean_exec_time DESC LIMIT :limit"
            ),
            {"limit": SLOWEST_QUERIES},
        ).all()
    except sa.exc.SQLAlchemyError as error:
        db.session.rollback()
        notes.append(f"Slow queries are not available: {_first_line(error)}")
        return None
    return [
        {"query": query[:500], "calls": calls, "mean_ms": round(mean, 2), "total_ms": round(total, 2)}
        for query, calls, mean, total in rows
    ]


def _sqlite_info(notes):
    page_size = db.session.scalar(sa.text("PRAGMA page_size"))
    page_count = db.session.scalar(sa.text("PRAGMA page_count"))
    names = sa.inspect(db.engine).get_table_names()
    tables = []
    for name in names:
        quoted = db.engine.dialect.identifier_preparer.quote(name)
        tables.append({"table": name, "rows": db.session.scalar(sa.text(f"SELECT COUNT(*) FROM {quoted}"))})
    tables.sort(key=lambda row: row["rows"], reverse=True)
    notes.append(
        "SQLite keeps no per-table sizes, connection list or query statistics; row counts are exact, "
        "and the size is the whole file's."
    )
    return {
        "database_bytes": page_size * page_count,
        "connections": None,
        "tables": tables[:LARGEST_TABLES],
        "indexes": None,
        "slow_queries": None,
    }


def _call(pool, name):
    method = getattr(pool, name, None)
    return method() if callable(method) else None


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
