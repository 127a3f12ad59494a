"""The production target: a Triton model repository for TensorRT-LLM's LLM API model, rendered and checked here.

TensorRT-LLM runs only on GPU images, so nothing here imports it. A model is two files:
    <out>/<model>/config.pbtxt          python backend, tensors from tasks/serving/tensors.py
    <out>/<model>/<version>/model.yaml  LLM() arguments of the pinned release (include/serving/trtllm_llm_args.yaml)
The engine-builder step (`build`) also copies upstream's model.py/helpers.py from its image into the version
directory, checks the checkpoint, and refuses to finish with any problem. `python -m tasks.serving.trtllm --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from string import Template
from typing import Any, get_type_hints

import yaml

from tasks.serving import tensors, triton_config

INCLUDE = Path(__file__).resolve().parents[2] / "include" / "serving"
LLM_ARGS_FILE = INCLUDE / "trtllm_llm_args.yaml"
CONFIG_TEMPLATE = "tensorrt_llm/config.pbtxt.tmpl"
MODEL_YAML_TEMPLATE = INCLUDE / "tensorrt_llm" / "model.yaml.tmpl"
# Where the NGC tritonserver trtllm image keeps the LLM API model's code (model.py, helpers.py).
IMAGE_BACKEND_CODE = Path("/app/all_models/llmapi/tensorrt_llm/1")
# Upstream's model reads both from model.yaml's triton_config; both files get them from here.
TRITON_MAX_BATCH_SIZE = 0  # LLM() batches in flight itself; upstream's wrapper takes one request per execute
DECOUPLED = True  # token streaming
LORA_INPUTS = frozenset({"lora_name", "lora_id", "lora_path", "lora_ckpt_source"})
# Quantisation name -> the quant_algo the checkpoint must declare. The PyTorch backend loads weights as the
# checkpoint is quantised (e.g. by ModelOpt); the KV cache follows through kv_cache_config.dtype.
QUANTIZATION = {"fp8": "FP8"}


@dataclasses.dataclass(frozen=True)
class LlmArgsSpec:
    """The model.yaml keys the pinned TensorRT-LLM release accepts."""

    version: str
    llm_args: frozenset[str]
    sections: dict[str, frozenset[str]]  # nested LLM() configs and upstream's own triton_config

    @classmethod
    def load(cls, path: Path = LLM_ARGS_FILE) -> LlmArgsSpec:
        raw = yaml.safe_load(path.read_text())
        sections = {**raw["nested"], **raw["model_yaml_sections"]}
        return cls(str(raw["tensorrt_llm_version"]), frozenset(raw["llm_args"]),
                   {name: frozenset(keys) for name, keys in sections.items()})

    @property
    def top_level(self) -> frozenset[str]:
        return self.llm_args | (self.sections.keys() - self.llm_args)


def _setting(text: str, default: Any = dataclasses.MISSING) -> Any:
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class TrtllmModel:
    """One deployment's settings; invalid ones fail here, before anything is written."""

    model_name: str = _setting("Triton model name (one per GPU deployment: two LLMs cannot share a KV cache)")
    hf_checkpoint: str = _setting("exported Hugging Face checkpoint LLM() loads, as the serving pod mounts it")
    registered_version: str = _setting("registered model version served, recorded in config.pbtxt (lineage)")
    tensor_parallel: int = _setting("GPUs per model (tensor_parallel_size)", 1)
    kv_cache_fraction: float = _setting("free GPU memory given to the KV cache", 0.9)
    quantization: str | None = _setting("checkpoint's quantisation; also the KV cache's dtype", None)
    max_lora_rank: int = _setting("largest adapter rank served", 64)
    max_loras: int = _setting("adapters on the GPU at once; 0 turns LoRA off", 0)
    max_cpu_loras: int = _setting("adapters cached in host memory (>= max_loras)", 0)
    max_batch_size: int = _setting("requests LLM() batches in flight", 64)
    triton_version: int = _setting("Triton version directory, pinned by version_policy", 1)

    def __post_init__(self) -> None:
        rules = {
            "model_name": bool(self.model_name) and "/" not in self.model_name,
            "hf_checkpoint": bool(self.hf_checkpoint),
            "registered_version": bool(str(self.registered_version)),
            "tensor_parallel": self.tensor_parallel >= 1,
            "kv_cache_fraction": 0 < self.kv_cache_fraction <= 1,
            "quantization": self.quantization is None or self.quantization in QUANTIZATION,
            "max_lora_rank": self.max_lora_rank >= 1,
            "max_loras": self.max_loras >= 0,
            "max_cpu_loras": self.max_cpu_loras >= self.max_loras,
            "max_batch_size": self.max_batch_size >= 1,
            "triton_version": self.triton_version >= 1,
        }
        broken = [name for name, ok in rules.items() if not ok]
        if broken:
            raise ValueError(f"TensorRT-LLM model settings: invalid {', '.join(broken)} in {self} (names must be "
                             f"non-empty, counts positive, kv_cache_fraction in (0, 1], max_cpu_loras >= max_loras, "
                             f"quantization one of {sorted(QUANTIZATION)} or None)")


def render_repository(out_dir: Path | str, *, model_name: str, hf_checkpoint: str, tensor_parallel: int,
                      kv_cache_fraction: float, quantization: str | None, max_lora_rank: int, max_loras: int,
                      max_cpu_loras: int, max_batch_size: int, registered_version: str,
                      triton_version: int = 1) -> Path:
    """Write <out_dir>/<model_name>/ (config.pbtxt + <triton_version>/model.yaml); return that directory."""
    return write_model(Path(out_dir), TrtllmModel(
        model_name=model_name, hf_checkpoint=hf_checkpoint, registered_version=str(registered_version),
        tensor_parallel=tensor_parallel, kv_cache_fraction=kv_cache_fraction, quantization=quantization,
        max_lora_rank=max_lora_rank, max_loras=max_loras, max_cpu_loras=max_cpu_loras,
        max_batch_size=max_batch_size, triton_version=triton_version))


def write_model(out_dir: Path, model: TrtllmModel, spec: LlmArgsSpec | None = None) -> Path:
    """render_repository for an already checked model (the CLI builds one from its flags)."""
    spec = spec or LlmArgsSpec.load()
    model_dir = out_dir / model.model_name
    version_dir = model_dir / str(model.triton_version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(triton_config.render(
        CONFIG_TEMPLATE, model_name=model.model_name, max_batch_size=TRITON_MAX_BATCH_SIZE,
        decoupled=_scalar(DECOUPLED), versions=model.triton_version, registered_version=model.registered_version,
        tensorrt_llm_version=spec.version))
    (version_dir / "model.yaml").write_text(render_model_yaml(model, spec))
    return model_dir


def render_model_yaml(model: TrtllmModel, spec: LlmArgsSpec) -> str:
    """model.yaml: the LLM() arguments; lora_config only when LoRA is on, so a base-only model reserves no cache."""
    lora = ""
    if model.max_loras:
        lora = (f"lora_config:\n  max_lora_rank: {model.max_lora_rank}\n  max_loras: {model.max_loras}\n"
                f"  max_cpu_loras: {model.max_cpu_loras}")
    return Template(MODEL_YAML_TEMPLATE.read_text()).substitute(
        tensorrt_llm_version=spec.version, model=_scalar(model.hf_checkpoint),
        tensor_parallel_size=model.tensor_parallel, max_batch_size=model.max_batch_size,
        kv_cache_fraction=_scalar(model.kv_cache_fraction), kv_cache_dtype=model.quantization or "auto",
        lora_config=lora, triton_max_batch_size=TRITON_MAX_BATCH_SIZE, decoupled=_scalar(DECOUPLED))


def _scalar(value: Any) -> str:
    """A scalar as YAML and protobuf text both read it (JSON's form), so paths with ':' or '#' stay strings."""
    return json.dumps(value)


# --- validation ------------------------------------------------------------------------------


def validate_repository(path: Path | str, spec: LlmArgsSpec | None = None) -> list[str]:
    """Every problem a Triton + TensorRT-LLM load would hit (or a client would), each naming file and field."""
    spec = spec or LlmArgsSpec.load()
    configs = sorted(Path(path).rglob("config.pbtxt"))
    if not configs:
        return [f"{path}: no config.pbtxt found"]
    return [problem for config in configs for problem in _model_problems(config, spec)]


def _model_problems(config_path: Path, spec: LlmArgsSpec) -> list[str]:
    try:
        config = triton_config.parse(config_path.read_text())
    except ValueError as error:
        return [f"{config_path}: {str(error).removeprefix('config.pbtxt: ')}"]
    where = str(config_path)
    problems = _tensor_problems(where, "input", config.input, tensors.INPUTS)
    problems += _tensor_problems(where, "output", config.output, tensors.OUTPUTS)
    if config.backend != "python":
        problems.append(f"{where}: backend is '{config.backend}'; the LLM API model runs on the python backend")
    if config.model_transaction_policy.decoupled != DECOUPLED:
        problems.append(f"{where}: model_transaction_policy.decoupled must be true for token streaming")
    if "registered_version" not in config.parameters or not config.parameters["registered_version"].string_value:
        problems.append(f"{where}: parameters 'registered_version' is missing (lineage to the registered model)")
    versions = list(config.version_policy.specific.versions)
    if not versions:
        problems.append(f"{where}: version_policy must pin versions explicitly (specific {{ versions: [...] }})")
    for version in versions:
        problems += _version_problems(config_path.parent / str(version), config, spec)
    return problems


def _tensor_problems(where: str, kind: str, declared: Sequence[Any], expected: Sequence[tensors.Tensor]) -> list[str]:
    from tritonclient.grpc import model_config_pb2

    wanted = {t.name: t for t in expected}
    problems = [f"{where}: {kind} '{t.name}' is missing (tasks/serving/tensors.py declares it)"
                for t in expected if t.name not in {d.name for d in declared}]
    for tensor in declared:
        if tensor.name not in wanted:
            problems.append(f"{where}: {kind} '{tensor.name}' is not in tasks/serving/tensors.py, the client contract")
            continue
        want = wanted[tensor.name]
        got = {"data_type": model_config_pb2.DataType.Name(tensor.data_type), "dims": tuple(tensor.dims)}
        if kind == "input":
            got["optional"] = tensor.optional
        for field, value in got.items():
            if value != getattr(want, field):
                problems.append(f"{where}: {kind} '{tensor.name}' {field} is {value}, "
                                f"tasks/serving/tensors.py says {getattr(want, field)}")
    return problems


def _version_problems(version_dir: Path, config: Any, spec: LlmArgsSpec) -> list[str]:
    model_yaml = version_dir / "model.yaml"
    if not model_yaml.is_file():
        return [f"{model_yaml}: missing (version {version_dir.name} is pinned by version_policy)"]
    try:
        values = yaml.safe_load(model_yaml.read_text())
    except yaml.YAMLError as error:
        return [f"{model_yaml}: not YAML: {error}"]
    if not isinstance(values, dict):
        return [f"{model_yaml}: must be a mapping of LLM() arguments"]
    problems = [f"{model_yaml}: '{key}' is not an LLM() argument of TensorRT-LLM {spec.version} "
                f"(allowed: include/serving/trtllm_llm_args.yaml)" for key in values if key not in spec.top_level]
    if "model" not in values:
        problems.append(f"{model_yaml}: 'model' (the checkpoint LLM() loads) is missing")
    for section, allowed in spec.sections.items():
        if section not in values:
            continue
        if not isinstance(values[section], dict):
            problems.append(f"{model_yaml}: '{section}' must be a mapping")
            continue
        problems += [f"{model_yaml}: '{section}.{key}' is not a field of {section} in TensorRT-LLM {spec.version}"
                     for key in values[section] if key not in allowed]
    problems += _triton_config_problems(model_yaml, values.get("triton_config"), config)
    return problems + _backend_code_problems(version_dir, config)


def _triton_config_problems(model_yaml: Path, section: Any, config: Any) -> list[str]:
    """Upstream's model copies triton_config onto the Triton config at load; a disagreement fails the load."""
    if not isinstance(section, dict):
        return [f"{model_yaml}: 'triton_config' with max_batch_size and decoupled is required by upstream's model.py"]
    problems = []
    for key, in_config in (("max_batch_size", config.max_batch_size),
                           ("decoupled", config.model_transaction_policy.decoupled)):
        if key not in section:
            problems.append(f"{model_yaml}: 'triton_config.{key}' is missing")
        elif section[key] != in_config:
            problems.append(f"{model_yaml}: 'triton_config.{key}' is {section[key]!r} but config.pbtxt says "
                            f"{in_config!r}; Triton refuses to load the model")
    return problems


def _backend_code_problems(version_dir: Path, config: Any) -> list[str]:
    """A model.py older than upstream's LoRA inputs would serve the base model to every adapter request."""
    code = [version_dir / name for name in ("model.py", "helpers.py") if (version_dir / name).is_file()]
    lora_inputs = sorted(LORA_INPUTS & {tensor.name for tensor in config.input})
    if not code or not lora_inputs or "lora_request" in "".join(p.read_text() for p in code):
        return []
    return [f"{version_dir / 'model.py'}: inputs {', '.join(lora_inputs)} are declared but this model code never "
            f"builds a lora_request; use TensorRT-LLM code with LoRA inputs (NVIDIA/TensorRT-LLM PR #14079)"]


# --- the engine-builder step -----------------------------------------------------------------


def checkpoint_problems(hf_checkpoint: Path, quantization: str | None) -> list[str]:
    """The checkpoint LLM() will load exists and is quantised the way model.yaml says."""
    config_json = hf_checkpoint / "config.json"
    if not config_json.is_file():
        return [f"{config_json}: missing; --hf-checkpoint must be an exported Hugging Face checkpoint"]
    declared = checkpoint_quant_algo(hf_checkpoint)
    wanted = QUANTIZATION.get(quantization or "")
    if declared != wanted:
        return [f"{hf_checkpoint}: checkpoint quantisation is {declared or 'none'}, quantization={quantization!r} "
                f"needs {wanted or 'none'} (quantise the export first, e.g. with ModelOpt)"]
    return []


def checkpoint_quant_algo(hf_checkpoint: Path) -> str | None:
    """What the checkpoint declares: ModelOpt's hf_quant_config.json, else config.json's quantization_config."""
    modelopt = hf_checkpoint / "hf_quant_config.json"
    if modelopt.is_file():
        return json.loads(modelopt.read_text()).get("quantization", {}).get("quant_algo")
    quant = json.loads((hf_checkpoint / "config.json").read_text()).get("quantization_config") or {}
    algo = quant.get("quant_algo") or quant.get("quant_method")
    return algo.upper() if algo else None


def install_backend_code(model_dir: Path, version: int, source: Path = IMAGE_BACKEND_CODE) -> None:
    """Upstream's model code, from the image that will serve it, next to model.yaml."""
    for name in ("model.py", "helpers.py"):
        shutil.copy2(source / name, model_dir / str(version) / name)


def version_matches(installed: str, pinned: str) -> bool:
    """NGC builds append their own component (1.0.3 ships as 1.0.3.2510)."""
    return installed == pinned or installed.startswith(pinned + ".")


def image_problems(spec: LlmArgsSpec, backend_code: Path = IMAGE_BACKEND_CODE) -> list[str]:
    """Run at image build: a base tag without the pinned release or its model code never becomes a builder."""
    try:
        installed = metadata.version("tensorrt_llm")
    except metadata.PackageNotFoundError:
        return ["tensorrt_llm is not installed in this image"]
    problems = [] if version_matches(installed, spec.version) else [
        f"tensorrt_llm {installed} is installed, include/serving/trtllm_llm_args.yaml pins {spec.version}"]
    return problems + [f"{backend_code / name}: missing (the LLM API model code)"
                       for name in ("model.py", "helpers.py") if not (backend_code / name).is_file()]


def engine_builder_command(model: TrtllmModel, out: str, backend_code: str | None = None) -> list[str]:
    """The argv the engine-builder pod runs for this model (the CLI below parses it back into the same model)."""
    argv = ["python", "-m", "tasks.serving.trtllm", "build", "--out", out]
    for field in dataclasses.fields(TrtllmModel):
        value = getattr(model, field.name)
        if value is not None:
            argv += [_flag(field.name), str(value)]
    return argv + (["--backend-code", backend_code] if backend_code else [])


# --- CLI -------------------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    hints = get_type_hints(TrtllmModel)
    for field in dataclasses.fields(TrtllmModel):
        kind = hints[field.name]
        required = field.default is dataclasses.MISSING
        options: dict[str, Any] = {"required": required, "type": kind if kind in (int, float) else str}
        if not required:
            options["default"] = field.default
        if field.name == "quantization":
            options["choices"] = sorted(QUANTIZATION)
        default = "" if required else f" (default {field.default})"
        parser.add_argument(_flag(field.name), **options, help=field.metadata["help"] + default)


def _model_from(args: argparse.Namespace) -> TrtllmModel:
    return TrtllmModel(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrtllmModel)})


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m tasks.serving.trtllm", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = cli.add_subparsers(dest="verb", required=True)
    render = verbs.add_parser("render", help="write config.pbtxt + model.yaml (no GPU, no TensorRT-LLM needed)")
    build = verbs.add_parser("build", help="the engine-builder step: render, add upstream's model code from this "
                                           "image, check the checkpoint, validate; exit 1 on any problem")
    for verb in (render, build):
        verb.add_argument("--out", required=True, help="model repository directory to write <model-name>/ into")
        _add_model_flags(verb)
    build.add_argument("--backend-code", type=Path, default=IMAGE_BACKEND_CODE,
                       help=f"upstream's all_models/llmapi/tensorrt_llm/1 (default {IMAGE_BACKEND_CODE})")
    validate = verbs.add_parser("validate", help="print every problem in a rendered repository; exit 1 if any")
    validate.add_argument("path", type=Path)
    check = verbs.add_parser("check-image", help="the image carries the pinned TensorRT-LLM and its model code")
    check.add_argument("--backend-code", type=Path, default=IMAGE_BACKEND_CODE)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spec = LlmArgsSpec.load()
    if args.verb == "check-image":
        problems = image_problems(spec, args.backend_code)
    elif args.verb == "validate":
        problems = validate_repository(args.path, spec)
    else:
        model = _model_from(args)
        problems = checkpoint_problems(Path(model.hf_checkpoint), model.quantization) if args.verb == "build" else []
        if not problems:
            model_dir = write_model(Path(args.out), model, spec)
            if args.verb == "build":
                install_backend_code(model_dir, model.triton_version, args.backend_code)
            problems = validate_repository(model_dir, spec)
            print(model_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
