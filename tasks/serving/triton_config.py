"""Rendering and parsing Triton model configs: the tensors block comes from tensors.py, parsing uses Triton's schema."""

from __future__ import annotations

from pathlib import Path
from string import Template

from tasks.serving.tensors import INPUTS, OUTPUTS, Tensor

INCLUDE = Path(__file__).resolve().parents[2] / "include" / "serving"


def _block(kind: str, tensors: tuple[Tensor, ...]) -> str:
    rows = []
    for t in tensors:
        optional = " optional: true" if kind == "input" and t.optional else ""
        dims = ", ".join(str(d) for d in t.dims)
        rows.append(f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {dims} ]{optional} }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]"


def io_blocks() -> str:
    """The `input [...]` and `output [...]` blocks every LLM model config shares."""
    return _block("input", INPUTS) + "\n" + _block("output", OUTPUTS)


def render(template: str, **values: object) -> str:
    """include/serving/<template> filled in; `$io` becomes the shared tensors blocks."""
    text = Template((INCLUDE / template).read_text()).substitute(io=io_blocks(), **values)
    parse(text)  # a config Triton would refuse never reaches the repository
    return text


def parse(text: str):
    """The config as Triton's ModelConfig protobuf; ValueError naming the problem if Triton's schema refuses it."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ValueError(f"config.pbtxt: {error}") from error


def served_versions(text: str) -> list[int]:
    """The versions a config's version_policy pins."""
    return sorted(int(v) for v in parse(text).version_policy.specific.versions)
