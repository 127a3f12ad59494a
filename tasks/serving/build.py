"""Build a deployment: registered model version (+ LoRA adapters) -> a new version in the Triton model repository.

    python -m tasks.serving.build --model models:/llmops-tiny/3 --adapter models:/llmops-tiny-lora/2
                                  --repository .stack/triton --served-name llm [--quantization int8-dynamic]

Downloads the registered artifacts from MLflow, checks that every adapter was trained on this base (so tokenizer
and weights agree), computes the reference generation the deploy smoke test compares against (greedy, in-process,
from the export itself), and writes the version atomically. Prints one JSON line: the version and its lineage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tasks.common import registry
from tasks.serving import python_target
from tasks.serving.quantize import check_quantization
from tasks.serving.repository import ModelRepository

REFERENCE_PROMPT = "def "
REFERENCE_TOKENS = 16


class BuildError(ValueError):
    """A deployment that must not be built; the message names the input and the rule."""


def parse_model_uri(uri: str) -> tuple[str, str]:
    """models:/<name>/<version or alias> -> (name, version or alias)."""
    parts = uri.removeprefix("models:/").split("/")
    if not uri.startswith("models:/") or len(parts) != 2 or not all(parts):
        raise BuildError(f"{uri!r}: expected models:/<name>/<version or alias>")
    return parts[0], parts[1]


def _download(tracking_uri: str, version: registry.ModelVersion, into: Path) -> Path:
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(into),
                                                    tracking_uri=tracking_uri))


def reference_generation(checkpoint: Path, adapters: dict[str, Path]) -> dict[str, Any]:
    """Greedy continuations of a fixed prompt computed in-process from the export: what serving must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer(REFERENCE_PROMPT, return_tensors="pt").input_ids

    def greedy(adapter: Path | None) -> str:
        model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).eval()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=REFERENCE_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return {"prompt": REFERENCE_PROMPT, "max_tokens": REFERENCE_TOKENS, "base": greedy(None),
            "adapters": {name: greedy(path) for name, path in adapters.items()}}


def plan(tracking_uri: str, model_uri: str, adapter_uris: list[str]
         ) -> tuple[registry.ModelVersion, list[registry.ModelVersion]]:
    """The registered base and adapters, checked to belong together, before anything is downloaded."""
    name, wanted = parse_model_uri(model_uri)
    base = registry.resolve(tracking_uri, name, wanted)
    adapters = [registry.resolve(tracking_uri, *parse_model_uri(uri)) for uri in adapter_uris]
    for adapter in adapters:
        if adapter.tags.get("base_version") != base.version or not adapter.name.startswith(base.name):
            raise BuildError(f"adapter {adapter.name} v{adapter.version} was trained on base "
                             f"v{adapter.tags.get('base_version') or '?'}, not on {base.name} v{base.version}: its "
                             "tokenizer and weights may not match; deploy it with the base it was trained on")
    return base, adapters


def find_built(repository: ModelRepository, served_name: str, run_key: str) -> int | None:
    """The version an earlier attempt of this run already wrote (a retried build reuses it)."""
    for version in reversed(repository.versions(served_name)):
        deployment = repository.version_dir(served_name, version) / "deployment.json"
        if run_key and json.loads(deployment.read_text()).get("run_key") == run_key:
            return version
    return None


def build(tracking_uri: str, model_uri: str, adapter_uris: list[str], repository: ModelRepository, served_name: str,
          target: str = "python", quantization: str | None = None, retention: int = 3,
          run_key: str = "", max_perplexity_delta: float = 0.05, threads: int | None = 1) -> dict[str, Any]:
    if target != "python":
        raise BuildError(f"target {target}: built by the engine-builder pod (python -m tasks.serving.trtllm build); "
                         "this command builds the embedded python target")
    base, adapters = plan(tracking_uri, model_uri, adapter_uris)
    lineage = {"registered_model": base.name, "registered_version": base.version, "source": base.source,
               "run_key": run_key}
    done = find_built(repository, served_name, run_key)
    if done is not None:
        print(f"build: {served_name} version {done} was built by an earlier attempt of {run_key}; reusing it")
        return {"version": done, "adapters": {a.name: a.version for a in adapters}, **lineage, "target": target,
                "quantization": quantization, "pruned": []}
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = _download(tracking_uri, base, Path(scratch) / "base")
        adapter_dirs = {a.name: _download(tracking_uri, a, Path(scratch) / f"adapter-{a.name}") for a in adapters}
        print(f"build: {base.name} v{base.version} and {len(adapters)} adapter(s) downloaded; computing the reference",
              flush=True)
        reference = reference_generation(checkpoint, adapter_dirs)
        if quantization:
            lineage["perplexity_delta"] = f"{check_quantization(checkpoint, quantization, max_perplexity_delta):.6f}"
        with repository.writer():
            for adapter in adapters:
                repository.add_adapter(adapter.name, adapter_dirs[adapter.name],
                                       {"registered_version": adapter.version, "base_version": base.version})

            def populate(version_dir: Path) -> None:
                python_target.populate(version_dir, checkpoint, adapters_index=repository.adapters_index,
                                       lineage=lineage, quantization=quantization, threads=threads)
                (version_dir / "reference.json").write_text(json.dumps(reference, indent=2))

            version = repository.add_version(served_name, populate)
            protect = set(_serving_versions(repository, served_name)) | {version}
            pruned = repository.prune(served_name, retention, protect)
    print(f"build: {served_name} version {version} written to {repository.version_dir(served_name, version)}"
          + (f"; pruned versions {pruned}" if pruned else ""), flush=True)
    return {"version": version, "adapters": {a.name: a.version for a in adapters}, **lineage, "target": target,
            "quantization": quantization, "pruned": pruned}


def _serving_versions(repository: ModelRepository, served_name: str) -> list[int]:
    from tasks.serving.triton_config import served_versions

    text = repository.read_config(served_name)
    return served_versions(text) if text else []


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.serving.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="registered base model: models:/<name>/<version or alias>")
    p.add_argument("--adapter", action="append", default=[], help="registered LoRA adapter (repeatable)")
    p.add_argument("--repository", required=True, type=Path, help="model repository root (holds models/)")
    p.add_argument("--served-name", default="llm", help="the Triton model name clients call")
    p.add_argument("--target", choices=["python", "tensorrt_llm"], default="python")
    p.add_argument("--quantization", choices=["none", "int8-dynamic"], default="none",
                   help="int8-dynamic: CPU int8 dynamic quantisation of the linear layers")
    p.add_argument("--max-perplexity-delta", type=float, default=0.05,
                   help="quantised builds: the largest relative perplexity rise allowed (default 0.05 = 5%%)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the served model (default 1: on a small CPU box the other cores go to "
                        "Triton and its clients; bench/serving.py measured 2.06x at concurrency 8 with 1, 1.4x with 2)")
    p.add_argument("--retention", type=int, default=3, help="versions kept besides the serving one")
    p.add_argument("--tracking-uri", default=None, help="MLflow (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--run-key", default="", help="who builds (dag id/run id): a retry reuses that run's version")
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    args = parser().parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        print("error: no MLflow tracking URI (--tracking-uri or MLFLOW_TRACKING_URI)", file=sys.stderr)
        return 2
    try:
        quantization = None if args.quantization == "none" else args.quantization
        result = build(uri, args.model, args.adapter, ModelRepository(args.repository), args.served_name,
                       args.target, quantization, args.retention, args.run_key,
                       args.max_perplexity_delta, args.threads)
    except (BuildError, LookupError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
