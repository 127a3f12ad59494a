"""The production TensorRT-LLM target: the rendered LLM API model repository, its validation and the builder step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks.serving import tensors, triton_config, trtllm

SETTINGS = dict(model_name="tiny", hf_checkpoint="/ckpt/tiny: v1", tensor_parallel=2, kv_cache_fraction=0.85,
                quantization="fp8", max_lora_rank=16, max_loras=4, max_cpu_loras=8, max_batch_size=32,
                registered_version="7")
SPEC = trtllm.LlmArgsSpec.load()


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    return trtllm.render_repository(tmp_path / "repo", **SETTINGS)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_rendered_repository_validates_and_carries_lineage(model_dir: Path) -> None:
    assert trtllm.validate_repository(model_dir.parent) == []
    config = triton_config.parse((model_dir / "config.pbtxt").read_text())
    assert config.backend == "python" and config.model_transaction_policy.decoupled
    assert list(config.version_policy.specific.versions) == [1]
    assert [t.name for t in config.input] == [t.name for t in tensors.INPUTS]
    assert [t.name for t in config.output] == [t.name for t in tensors.OUTPUTS]
    assert config.parameters["registered_version"].string_value == "7"
    assert config.parameters["tensorrt_llm_version"].string_value == SPEC.version


def test_lora_limits_and_fp8_render_into_model_yaml(model_dir: Path) -> None:
    values = yaml.safe_load((model_dir / "1" / "model.yaml").read_text())
    assert values["model"] == "/ckpt/tiny: v1"
    assert values["backend"] == "pytorch"
    assert values["tensor_parallel_size"] == 2 and values["max_batch_size"] == 32
    assert values["kv_cache_config"] == {"free_gpu_memory_fraction": 0.85, "dtype": "fp8"}
    assert values["lora_config"] == {"max_lora_rank": 16, "max_loras": 4, "max_cpu_loras": 8}
    assert values["triton_config"] == {"max_batch_size": 0, "decoupled": True}


def test_without_lora_or_quantisation_nothing_of_them_is_rendered(tmp_path: Path) -> None:
    model_dir = trtllm.render_repository(tmp_path, **{**SETTINGS, "quantization": None, "max_loras": 0})
    values = yaml.safe_load((model_dir / "1" / "model.yaml").read_text())
    assert "lora_config" not in values
    assert values["kv_cache_config"]["dtype"] == "auto"
    assert trtllm.validate_repository(model_dir) == []


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    first = trtllm.render_repository(tmp_path / "a", **SETTINGS)
    second = trtllm.render_repository(tmp_path / "b", **SETTINGS)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files == [Path("1/model.yaml"), Path("config.pbtxt")]
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_config_with_a_typo_d_field_names_the_file_and_the_field(model_dir: Path) -> None:
    config = model_dir / "config.pbtxt"
    edit(config, "max_batch_size: 0", "max_batch_sise: 0")
    problems = trtllm.validate_repository(model_dir)
    assert len(problems) == 1
    assert str(config) in problems[0] and "max_batch_sise" in problems[0]


def test_unknown_llm_argument_names_the_key_and_the_pinned_version(model_dir: Path) -> None:
    model_yaml = model_dir / "1" / "model.yaml"
    edit(model_yaml, "max_batch_size: 32", "max_batch_size: 32\nmax_batch_sizes: 8")
    edit(model_yaml, "free_gpu_memory_fraction:", "free_gpu_mem_fraction:")
    problems = trtllm.validate_repository(model_dir)
    assert len(problems) == 2
    assert all(str(model_yaml) in p and f"TensorRT-LLM {SPEC.version}" in p for p in problems)
    assert "'max_batch_sizes'" in problems[0]
    assert "'kv_cache_config.free_gpu_mem_fraction'" in problems[1]


def test_quant_config_is_refused_for_the_pytorch_backend(model_dir: Path) -> None:
    model_yaml = model_dir / "1" / "model.yaml"
    edit(model_yaml, "backend: pytorch", "backend: pytorch\nquant_config:\n  quant_algo: FP8")
    assert any("'quant_config'" in p for p in trtllm.validate_repository(model_dir))


def test_a_renamed_or_retyped_tensor_is_named(model_dir: Path) -> None:
    config = model_dir / "config.pbtxt"
    edit(config, 'name: "lora_id" data_type: TYPE_UINT64', 'name: "lora_idx" data_type: TYPE_UINT64')
    edit(config, 'name: "first_token_time_ns" data_type: TYPE_INT64',
         'name: "first_token_time_ns" data_type: TYPE_FP32')
    problems = trtllm.validate_repository(model_dir)
    assert any("input 'lora_id' is missing" in p for p in problems)
    assert any("input 'lora_idx' is not in tasks/serving/tensors.py" in p for p in problems)
    assert any("output 'first_token_time_ns' data_type is TYPE_FP32" in p and "TYPE_INT64" in p for p in problems)
    assert len(problems) == 3 and all(str(config) in p for p in problems)


def test_triton_config_must_agree_with_config_pbtxt(model_dir: Path) -> None:
    model_yaml = model_dir / "1" / "model.yaml"
    edit(model_yaml, "  decoupled: true", "  decoupled: false")
    problems = trtllm.validate_repository(model_dir)
    assert problems == [f"{model_yaml}: 'triton_config.decoupled' is False but config.pbtxt says True; "
                        "Triton refuses to load the model"]


def test_pinned_version_without_model_yaml_and_unpinned_policy_are_problems(model_dir: Path) -> None:
    (model_dir / "1" / "model.yaml").unlink()
    assert trtllm.validate_repository(model_dir) == [f"{model_dir / '1' / 'model.yaml'}: missing "
                                                     "(version 1 is pinned by version_policy)"]
    edit(model_dir / "config.pbtxt", "version_policy: { specific: { versions: [1] } }", "")
    assert any("version_policy must pin versions explicitly" in p for p in trtllm.validate_repository(model_dir))


def test_upstreams_own_model_yaml_keys_are_allowed(tmp_path: Path) -> None:
    """The sample model.yaml shipped with the LLM API model must pass the key check of the same release."""
    model_dir = trtllm.render_repository(tmp_path, **SETTINGS)
    (model_dir / "1" / "model.yaml").write_text(
        "model: TinyLlama/TinyLlama-1.1B-Chat-v1.0\nbackend: pytorch\ntensor_parallel_size: 1\n"
        "pipeline_parallel_size: 1\ntriton_config:\n  max_batch_size: 0\n  decoupled: true\n")
    assert trtllm.validate_repository(model_dir) == []


@pytest.mark.parametrize("change, field", [({"max_cpu_loras": 2}, "max_cpu_loras"),
                                           ({"quantization": "int3"}, "quantization"),
                                           ({"kv_cache_fraction": 1.5}, "kv_cache_fraction"),
                                           ({"model_name": "a/b"}, "model_name")])
def test_invalid_settings_fail_before_anything_is_written(tmp_path: Path, change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {field}"):
        trtllm.render_repository(tmp_path / "repo", **{**SETTINGS, **change})
    assert not (tmp_path / "repo").exists()


def test_engine_builder_command_parses_back_to_the_same_model() -> None:
    model = trtllm.TrtllmModel(**{**SETTINGS, "triton_version": 3})
    argv = trtllm.engine_builder_command(model, "/data/repo", backend_code="/code")
    assert argv[:4] == ["python", "-m", "tasks.serving.trtllm", "build"]
    args = trtllm.parser().parse_args(argv[3:])
    assert trtllm._model_from(args) == model
    assert (args.out, args.backend_code) == ("/data/repo", Path("/code"))


def _checkpoint(root: Path, quant_algo: str | None) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    if quant_algo:
        (root / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": quant_algo}}))
    return root


def _backend_code(root: Path, with_lora: bool) -> Path:
    root.mkdir()
    (root / "model.py").write_text("def generate(request):\n    return engine.generate_async(prompt"
                                   + (", lora_request=lora_request)\n" if with_lora else ")\n"))
    (root / "helpers.py").write_text("")
    return root


def test_build_renders_adds_the_model_code_and_validates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = trtllm.TrtllmModel(**{**SETTINGS, "hf_checkpoint": str(_checkpoint(tmp_path / "ckpt", "FP8"))})
    argv = trtllm.engine_builder_command(model, str(tmp_path / "repo"), str(_backend_code(tmp_path / "code", True)))
    assert trtllm.main(argv[3:]) == 0
    assert (tmp_path / "repo" / "tiny" / "1" / "model.py").is_file()
    assert capsys.readouterr().out.strip() == str(tmp_path / "repo" / "tiny")


def test_build_refuses_model_code_that_ignores_lora_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = trtllm.TrtllmModel(**{**SETTINGS, "hf_checkpoint": str(_checkpoint(tmp_path / "ckpt", "FP8"))})
    argv = trtllm.engine_builder_command(model, str(tmp_path / "repo"), str(_backend_code(tmp_path / "code", False)))
    assert trtllm.main(argv[3:]) == 1
    assert "lora_id, lora_name, lora_path" in capsys.readouterr().err


def test_build_refuses_a_checkpoint_not_quantised_as_asked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = trtllm.TrtllmModel(**{**SETTINGS, "hf_checkpoint": str(_checkpoint(tmp_path / "ckpt", None))})
    argv = trtllm.engine_builder_command(model, str(tmp_path / "repo"), str(_backend_code(tmp_path / "code", True)))
    assert trtllm.main(argv[3:]) == 1
    assert "quantisation is none" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_checkpoint_quantisation_from_hf_config(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "ckpt", None)
    (checkpoint / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "fp8"}}))
    assert trtllm.checkpoint_quant_algo(checkpoint) == "FP8"
    assert trtllm.checkpoint_problems(checkpoint, "fp8") == []
    assert trtllm.checkpoint_problems(tmp_path / "absent", None)[0].endswith(
        "missing; --hf-checkpoint must be an exported Hugging Face checkpoint")


def test_validate_cli_exit_code(model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert trtllm.main(["validate", str(model_dir)]) == 0
    edit(model_dir / "1" / "model.yaml", "backend: pytorch", "backend: pytorch\nspeculative: 1")
    assert trtllm.main(["validate", str(model_dir)]) == 1
    assert "'speculative' is not an LLM() argument" in capsys.readouterr().err


@pytest.mark.parametrize("installed, matches", [("1.2.1", True), ("1.2.1.2604", True), ("1.2.10", False),
                                                ("1.2.0", False)])
def test_image_version_check(installed: str, matches: bool) -> None:
    assert trtllm.version_matches(installed, "1.2.1") is matches


def test_check_image_without_tensorrt_llm_is_a_problem(tmp_path: Path) -> None:
    assert trtllm.image_problems(SPEC, tmp_path) == ["tensorrt_llm is not installed in this image"]
