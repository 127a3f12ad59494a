"""A tiny real step that proves a launcher works: every rank joins a gloo group and all-reduces its rank.

Run it alone (`python -m tasks.common.distributed_probe`) or under torchrun; the launchers use it in the
platform_smoke DAG and the tests. `--fail` exits non-zero and `--sleep` waits first (to test kill).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def all_reduce_ranks() -> tuple[int, int, int]:
    """(rank, world_size, sum of all ranks) as seen by this rank after a real all-reduce."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size == 1:
        return rank, world_size, rank
    dist.init_process_group("gloo")
    try:
        value = torch.tensor([rank], dtype=torch.int64)
        dist.all_reduce(value)
        return rank, world_size, int(value.item())
    finally:
        dist.destroy_process_group()


def say(line: str) -> None:
    """One write per line: ranks share the launcher's pipe, and print()'s separate newline write interleaves."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.common.distributed_probe", description=__doc__)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait before working")
    parser.add_argument("--fail", action="store_true", help="exit with code 3 after the all-reduce")
    parser.add_argument("--leave-child", type=float, default=0.0, metavar="SECONDS",
                        help="leave a child sleeping this long that holds our stdout (as an orphaned worker would)")
    args = parser.parse_args(argv)
    say(f"probe pid={os.getpid()} started")
    if args.leave_child:
        child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.leave_child})"])
        say(f"probe left child pid={child.pid}")
    time.sleep(args.sleep)
    rank, world_size, total = all_reduce_ranks()
    expected = world_size * (world_size - 1) // 2
    say(f"rank {rank}/{world_size}: all-reduce of ranks = {total} (expected {expected})")
    if total != expected:
        return 2
    return 3 if args.fail else 0


if __name__ == "__main__":
    sys.exit(main())
