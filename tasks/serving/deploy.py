"""Deploy a built version: load it as a candidate next to the serving one, gate it, then promote or roll back.

The served name (e.g. `llm`) is what clients call; its config.pbtxt pins exactly one version. A candidate is
loaded under `<served>-candidate` (the same version directory, linked), so it never takes client traffic before
its ready endpoint, its smoke test and its latency gate say so. Promotion rewrites the served config to the new
version and asks Triton to load it again: Triton brings the new version up and retires the old one without a gap
in availability, and if that load fails the old version keeps serving and the old config is put back. A rollback
only unloads the candidate. Every promotion and rollback is recorded in the deployment history table.
"""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tasks.serving import python_target
from tasks.serving.client import TritonControl, TritonError, generate
from tasks.serving.repository import ModelRepository, write_atomically
from tasks.serving.triton_config import served_versions

GATE_CONCURRENCY = (1, 4, 8)
GATE_PROMPTS = ("def ", "The function ", "import ", "class ", "# Return ", "for i in ", "if x ", "return ")


class GateFailed(RuntimeError):
    """The candidate is not fit to serve; the message names the gate, the figure and the limit."""


@dataclass(frozen=True)
class Target:
    repository: ModelRepository
    control: TritonControl
    grpc_url: str
    served_name: str = "llm"

    @property
    def candidate_name(self) -> str:
        return f"{self.served_name}-candidate"

    def serving_version(self) -> int | None:
        text = self.repository.read_config(self.served_name)
        versions = served_versions(text) if text else []
        return versions[0] if versions and self.control.ready(self.served_name) else None


def _config_for(target: Target, name: str, version: int) -> str:
    lineage = json.loads((target.repository.version_dir(target.served_name, version) / "deployment.json").read_text())
    return python_target.config(name, [version], registered_model=lineage["registered_model"],
                                registered_version=lineage["registered_version"])


def stage_candidate(target: Target, version: int, timeout: float = 300) -> None:
    """Load `version` as the candidate model and wait until Triton says it is ready."""
    if not target.control.server_ready():
        raise TritonError(f"Triton at {target.control.base} is not ready; the serving version is untouched")
    repo = target.repository
    if not repo.version_dir(target.served_name, version).is_dir():
        raise FileNotFoundError(f"{target.served_name} version {version} is not in {repo.models}; build it first")
    with repo.writer():
        link = repo.models / target.candidate_name / str(version)
        link.parent.mkdir(parents=True, exist_ok=True)
        for stale in link.parent.iterdir():
            if stale.is_symlink():
                stale.unlink()
        link.symlink_to(repo.version_dir(target.served_name, version), target_is_directory=True)
        repo.write_config(target.candidate_name, _config_for(target, target.candidate_name, version))
    target.control.load(target.candidate_name)
    target.control.wait_ready(target.candidate_name, version, timeout)


def smoke_test(target: Target, version: int) -> dict[str, Any]:
    """Greedy output through Triton equals the reference the build computed from the export, base and adapters."""
    reference = json.loads((target.repository.version_dir(target.served_name, version) / "reference.json").read_text())
    checks = {"base": None, **{name: name for name in reference["adapters"]}}
    for label, adapter in checks.items():
        expected = reference["base"] if adapter is None else reference["adapters"][adapter]
        got = generate(target.grpc_url, target.candidate_name, reference["prompt"],
                       max_tokens=reference["max_tokens"], **({"lora_name": adapter} if adapter else {})).text
        if got != expected:
            raise GateFailed(f"smoke test ({label}): served greedy output {got!r} differs from the export's "
                             f"reference {expected!r}")
    return {"smoke": "passed", "smoke_checks": len(checks)}


def measure_latency(grpc_url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    """TTFT and time per output token (p50, ms) and total tokens/s with `concurrency` streams in parallel."""
    import time

    prompts = [GATE_PROMPTS[i % len(GATE_PROMPTS)] for i in range(requests)]
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda p: generate(grpc_url, model, p, max_tokens=max_tokens), prompts))
    elapsed = time.perf_counter() - began
    per_token = [(r.total - r.ttft) / (len(r.token_times) - 1) for r in results if len(r.token_times) > 1]
    tokens = sum(len(r.token_times) for r in results)
    return {"ttft_ms": statistics.median(r.ttft for r in results) * 1000,
            "tpot_ms": statistics.median(per_token) * 1000 if per_token else 0.0,
            "tokens_per_s": tokens / elapsed}


def latency_gate(target: Target, gates: dict[str, float], max_tokens: int = 24) -> dict[str, Any]:
    """Measure at concurrency 1, 4 and 8 on the candidate; GateFailed naming the first figure past its limit."""
    figures = {c: measure_latency(target.grpc_url, target.candidate_name, c, max(2 * c, 4), max_tokens)
               for c in GATE_CONCURRENCY}
    for c, figure in figures.items():
        print(f"latency c={c}: TTFT p50 {figure['ttft_ms']:.1f} ms, per token p50 {figure['tpot_ms']:.2f} ms, "
              f"{figure['tokens_per_s']:.0f} tokens/s", flush=True)
    worst = figures[max(GATE_CONCURRENCY)]
    limits = [("max_ttft_ms", worst["ttft_ms"], lambda v, lim: v <= lim),
              ("max_tpot_ms", worst["tpot_ms"], lambda v, lim: v <= lim),
              ("min_tokens_per_s", worst["tokens_per_s"], lambda v, lim: v >= lim)]
    for gate, value, ok in limits:
        if gates.get(gate) is not None and not ok(value, gates[gate]):
            raise GateFailed(f"latency gate {gate}={gates[gate]} failed at concurrency {max(GATE_CONCURRENCY)}: "
                             f"measured {value:.2f}")
    return {"latency": {str(c): {k: round(v, 3) for k, v in f.items()} for c, f in figures.items()}}


def promote(target: Target, version: int) -> int | None:
    """Point the served name at `version` and reload it; returns the version it replaced. The candidate goes."""
    repo = target.repository
    with repo.writer():
        config_path = repo.models / target.served_name / "config.pbtxt"
        previous_text = repo.read_config(target.served_name)
        previous = target.serving_version()
        repo.write_config(target.served_name, _config_for(target, target.served_name, version))
        try:
            target.control.load(target.served_name)
            target.control.wait_ready(target.served_name, version)
        except TritonError:
            if previous_text is not None:
                write_atomically(config_path, previous_text)  # the repository says what Triton still serves
            raise
    unload_candidate(target)
    return previous


def unload_candidate(target: Target) -> None:
    """Take the candidate out of Triton and out of the repository; the serving version is not touched."""
    try:
        target.control.unload(target.candidate_name)
    except TritonError as error:
        if "not found" not in str(error).lower():
            raise
    with target.repository.writer():
        candidate_dir = target.repository.models / target.candidate_name
        if candidate_dir.is_dir():
            for entry in candidate_dir.iterdir():
                entry.unlink()
            candidate_dir.rmdir()

