"""The deployment history: one row per promotion, rollback or rejection (MLflow aliases keep no history)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

COLUMNS = ("served_name", "action", "from_version", "to_version", "registered_model", "registered_version",
           "adapters", "actor", "reason", "gates", "dag_run")


def record(conn: psycopg.Connection, **row: Any) -> int:
    """Insert one event; `adapters` and `gates` are dicts. Returns its id."""
    values = [json.dumps(row.get(c) or {}) if c in ("adapters", "gates") else row.get(c) for c in COLUMNS]
    with conn.transaction():
        found = conn.execute(f"INSERT INTO deployment_history ({', '.join(COLUMNS)}) "
                             f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) RETURNING id", values).fetchone()
    return int(found[0])


def recent(conn: psycopg.Connection, served_name: str, limit: int = 20) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT id, {', '.join(COLUMNS)}, at FROM deployment_history WHERE served_name = %s "
                          "ORDER BY id DESC LIMIT %s", (served_name, limit))
    names = [d.name for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
