"""A heavy step described once, so every launcher (local, kubernetes) runs the same thing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MODULE_RULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_QUANTITY_RULE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


@dataclass(frozen=True)
class Resources:
    """What one node of a step asks for; `gpus` maps to `nvidia.com/gpu` on Kubernetes."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0
    nodes: int = 1
    processes_per_node: int = 1

    def __post_init__(self) -> None:
        for name in ("cpu", "memory"):
            value = getattr(self, name)
            if not _QUANTITY_RULE.match(str(value)):
                raise ValueError(
                    f"Resources.{name}={value!r} is not a Kubernetes quantity (e.g. '2', '500m', '8Gi')"
                )
        for name in ("gpus", "nodes", "processes_per_node"):
            value = getattr(self, name)
            minimum = 0 if name == "gpus" else 1
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"Resources.{name}={value!r} must be an integer >= {minimum}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node


@dataclass(frozen=True)
class Step:
    """A `python -m <module> <args>` run with its resources and the image that holds its code."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    image: str = "llmops/step:latest"
    env: dict[str, str] = field(default_factory=dict)
    # Credentials: handed to a local subprocess as env; on Kubernetes only their names travel, as references
    # into the platform's Secret, so no value is ever written into a pod spec.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not _MODULE_RULE.match(self.module) or not self.module.startswith("tasks."):
            raise ValueError(
                f"Step {self.name!r}: module {self.module!r} must be a dotted module under tasks/ "
                "(e.g. 'tasks.training.pretrain')"
            )
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))

    def command(self) -> list[str]:
        """The module invocation after the interpreter (or torchrun) prefix."""
        return ["-m", self.module, *self.args]
