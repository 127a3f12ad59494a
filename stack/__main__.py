"""python -m stack up|down|status|logs|run-dag|main-job: the embedded single-machine stack, on 127.0.0.1 only."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from stack.components import COMPONENTS, by_name
from stack.config import DEFAULT_PORTS, StackConfig
from stack.process import PortTakenError


def up(cfg: StackConfig) -> None:
    """Start each component in order; one already healthy is left as it is (idempotent). If one fails to start (or
    the command is interrupted), what this call started is stopped again, so a failed `up` leaves no process."""
    cfg.save()
    began = time.monotonic()
    started = []
    try:
        for component in COMPONENTS:
            if component.pid(cfg) is not None and _healthy(component, cfg):
                print(f"  {component.name:<22} already up  {component.url(cfg)}", flush=True)
                continue
            if component.pid(cfg) is not None:
                component.stop(cfg)  # running but not answering: restart it cleanly
            t0 = time.monotonic()
            print(f"  {component.name:<22} starting ...", end="", flush=True)
            started.append(component)
            component.start(cfg)
            print(f" up in {time.monotonic() - t0:4.1f}s  {component.url(cfg)}", flush=True)
    except BaseException:
        print(f"\nstack up failed; stopping what it started: {', '.join(c.name for c in started) or 'nothing'}",
              file=sys.stderr, flush=True)
        for component in reversed(started):
            component.stop(cfg)
        raise
    print(f"stack up in {time.monotonic() - began:.1f}s (state under {cfg.home})")


def down(cfg: StackConfig) -> None:
    """Stop, in reverse order, exactly the processes `up` recorded."""
    for component in reversed(COMPONENTS):
        pid = component.pid(cfg)
        component.stop(cfg)
        print(f"  {component.name:<22} {'stopped pid ' + str(pid) if pid else 'not running'}", flush=True)


def status(cfg: StackConfig, as_json: bool = False) -> bool:
    rows = []
    for component in COMPONENTS:
        pid = component.pid(cfg)
        state = "stopped" if pid is None else ("healthy" if _healthy(component, cfg) else "unhealthy")
        rows.append({"component": component.name, "state": state, "pid": pid, "url": component.url(cfg)})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"  {row['component']:<22} {row['state']:<10} pid={str(row['pid'] or '-'):<8} {row['url']}")
    return all(row["state"] == "healthy" for row in rows)


def logs(cfg: StackConfig, name: str, lines: int, follow: bool) -> None:
    log_file = by_name(name).log_file(cfg)
    if not log_file.exists():
        raise SystemExit(f"no log yet for {name} at {log_file}")
    subprocess.run(["tail", f"-n{lines}", *(["-f"] if follow else []), str(log_file)])


def _healthy(component, cfg: StackConfig) -> bool:
    try:
        return bool(component.healthy(cfg))
    except Exception:  # noqa: BLE001 - any failure to answer is "unhealthy"
        return False


def main(argv: list[str] | None = None) -> int:
    ports = ", ".join(f"{k} (default {v})" for k, v in DEFAULT_PORTS.items())
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description="Start, stop and inspect the embedded LLMOps stack: PostgreSQL+pgvector, the lakeFS emulator, "
        "MLflow, Triton and "
        "Airflow (api-server, scheduler, dag-processor, triggerer), all on 127.0.0.1.",
        epilog=f"State, logs and PIDs live under LLMOPS_STACK_HOME (default .stack/). Ports: {ports}.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start every component in order (idempotent)")
    commands.add_parser("down", help="stop exactly the processes `up` started")
    status_cmd = commands.add_parser("status", help="each component's health, PID and URL; exit 1 unless all healthy")
    status_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    logs_cmd = commands.add_parser("logs", help="show a component's log")
    logs_cmd.add_argument("component", choices=[c.name for c in COMPONENTS])
    logs_cmd.add_argument("-n", "--lines", type=int, default=50)
    logs_cmd.add_argument("-f", "--follow", action="store_true")
    commands.add_parser("main-job", help="bring the stack up and run the platform's DAGs end to end")
    run_cmd = commands.add_parser("run-dag", help="trigger a DAG through the REST API and wait for it to finish")
    run_cmd.add_argument("dag_id")
    run_cmd.add_argument("--conf", default="{}", help="JSON object passed as the run's conf")
    run_cmd.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run")
    args = parser.parse_args(argv)

    cfg = StackConfig.from_env() if args.command in ("up", "main-job") else StackConfig.load()
    try:
        if args.command == "up":
            up(cfg)
        elif args.command == "main-job":
            from stack.main_job import run

            return run(cfg, up)
        elif args.command == "down":
            down(cfg)
        elif args.command == "status":
            return 0 if status(cfg, args.json) else 1
        elif args.command == "logs":
            logs(cfg, args.component, args.lines, args.follow)
        elif args.command == "run-dag":
            from stack.airflow_api import AirflowClient

            client = AirflowClient.for_stack(cfg)
            state = client.run_dag(args.dag_id, json.loads(args.conf), timeout=args.timeout, progress=print)
            return 0 if state == "success" else 1
    except PortTakenError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
