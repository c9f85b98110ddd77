"""Upgrading an embedded (SQLite) database keeps its rows."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The head of the first release with accounts, organizations and keys but no two-factor.
OLD_REVISION = "5a460b13ca26"
ROWS = """
insert into users (id, email, password_hash, name, is_admin, active, created_at)
    values (1, 'ada@example.com', 'x', '', 0, 1, '2026-01-01 00:00:00');
insert into organizations (id, name, personal, created_at) values (1, 'Ada', 1, '2026-01-01 00:00:00');
insert into memberships (org_id, user_id, role, created_at) values (1, 1, 'owner', '2026-01-01 00:00:00');
insert into api_keys (org_id, user_id, name, prefix, key_hash, created_at)
    values (1, 1, 'laptop', 'floyo_abc', 'hash', '2026-01-01 00:00:00');
insert into user_sessions (user_id, key_hash, user_agent, ip_address, created_at, last_seen_at)
    values (1, 'session hash', 'curl', '127.0.0.1', '2026-01-01 00:00:00', '2026-01-01 00:00:00');
"""


def flask_db(tmp_path, *args):
    environment = {
        **os.environ,
        "FLASK_APP": "wsgi.py",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'floyo.db'}",
        "INSTANCE_PATH": str(tmp_path),
        "REDIS_URL": "",
    }
    command = [sys.executable, "-m", "flask", "db", *args]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_sqlite_upgrade_keeps_rows(tmp_path):
    flask_db(tmp_path, "upgrade", OLD_REVISION)
    with sqlite3.connect(tmp_path / "floyo.db") as connection:
        connection.executescript(ROWS)

    flask_db(tmp_path, "upgrade")

    with sqlite3.connect(tmp_path / "floyo.db") as connection:
        counts = {
            table: connection.execute(f"select count(*) from {table}").fetchone()[0]
            for table in ("users", "organizations", "memberships", "api_keys", "user_sessions")
        }
        scopes = connection.execute("select scopes from api_keys").fetchone()[0]
        dangling = connection.execute("pragma foreign_key_check").fetchall()
    assert counts == {"users": 1, "organizations": 1, "memberships": 1, "api_keys": 1, "user_sessions": 1}
    assert scopes == "read,write"
    assert dangling == []
