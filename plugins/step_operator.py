"""The Airflow operator for a heavy step: the step is described once, the launcher comes from config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from plugins.connections import lakefs_endpoint
from plugins.launchers.base import Launcher, make_launcher
from plugins.launchers.step import Resources, Step


class StepOperator(BaseOperator):
    """Runs `python -m <module> <args>` through the configured launcher (local | kubernetes).

    `lakefs=True` hands the step the lakeFS endpoint of the `llmops_lakefs` connection as LAKECTL_* secrets.
    """

    template_fields: Sequence[str] = ("args", "env")

    def __init__(
        self,
        *,
        module: str,
        args: Sequence[str] = (),
        step_resources: Resources | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        launcher: str | None = None,
        lakefs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.module = module
        self.args = list(args)
        self.step_resources = step_resources or Resources()
        self.image = image
        self.env = dict(env or {})
        self.launcher_name = launcher
        self.lakefs = lakefs
        self._launcher: Launcher | None = None
        self._describe()  # validate at parse time, so a bad step fails the DAG import, not a run

    def _describe(self, secrets: dict[str, str] | None = None) -> Step:
        extra = {"image": self.image} if self.image else {}
        return Step(
            name=self.task_id, module=self.module, args=tuple(self.args), resources=self.step_resources,
            env=self.env, secrets=secrets or {}, **extra,
        )

    def execute(self, context: Any) -> None:
        # Endpoints are resolved at run time from Connections, never baked into the DAG file.
        secrets = lakefs_endpoint().to_env() if self.lakefs else {}
        self._launcher = make_launcher(self.launcher_name)
        self._launcher.run(self._describe(secrets), context, self.log)

    def on_kill(self) -> None:
        if self._launcher is not None:
            self._launcher.kill()
