"""The platform database (Postgres + pgvector): one way to connect, and the SQL migrations in include/sql/ applied
once each, in file-name order, recorded in `schema_migrations`.

Every step that touches the platform database calls `connect()`, which migrates first, so no DAG or test has to
remember a setup step. Concurrent callers are serialised by an advisory lock; a migration file that changed after it
was applied is refused (write a new one instead), because the database would no longer match the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psycopg

ENV_DSN = "LLMOPS_PLATFORM_DSN"
MIGRATIONS = Path(__file__).resolve().parents[2] / "include" / "sql"
_LOCK_KEY = 0x6C6C6D6F7073  # any constant; one advisory lock for "migrating the platform database"


class MigrationError(RuntimeError):
    """A migration failed or an applied one was edited; the message names the file."""


def dsn_from_env() -> str:
    dsn = os.environ.get(ENV_DSN)
    if not dsn:
        raise RuntimeError(f"platform database not configured: set {ENV_DSN} (a postgresql:// DSN)")
    return dsn


def connect(dsn: str, migrations: Path = MIGRATIONS) -> psycopg.Connection:
    """A connection to a database that has every migration applied; pgvector types registered on it."""
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)  # transactions are explicit
    migrate(conn, migrations)
    register_vector(conn)
    return conn


def migrate(conn: psycopg.Connection, migrations: Path = MIGRATIONS) -> list[str]:
    """Apply the not-yet-applied `NNN_*.sql` files in order, each in its own transaction; returns their names."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, sha256 text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        applied = dict(conn.execute("SELECT name, sha256 FROM schema_migrations").fetchall())
        for path in sorted(migrations.glob("*.sql")):
            sql = path.read_text(encoding="utf-8")
            digest = hashlib.sha256(sql.encode()).hexdigest()
            if path.name in applied:
                if applied[path.name] != digest:
                    raise MigrationError(f"migration {path.name} was changed after it was applied "
                                         f"(sha256 {applied[path.name][:12]} in the database, {digest[:12]} on disk); "
                                         "never edit an applied migration: add a new NNN_*.sql file")
                continue
            try:
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (name, sha256) VALUES (%s, %s)", (path.name, digest))
            except psycopg.Error as exc:
                raise MigrationError(f"migration {path.name} failed: {exc}") from exc
            applied_now.append(path.name)
    return applied_now
