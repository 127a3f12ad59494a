"""The Airflow operator for a heavy step: the step is described once, the launcher comes from config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, XComArg

from plugins.connections import MLFLOW, http_url, lakefs_endpoint, postgres_dsn, ray_address
from plugins.launchers.base import Launcher, make_launcher
from plugins.launchers.step import Resources, Step


class StepOperator(BaseOperator):
    """Runs `python -m <module> <args>` through the configured launcher (local | kubernetes).

    `args`, `env`, `step_resources` and `launcher` are templated, and may come from an upstream task's XCom (e.g. a
    validation task that decides the world size): `step_resources` then arrives as a dict of Resources fields, and an
    empty `launcher` means the platform's default. `lakefs=True` hands the step the `llmops_lakefs` endpoint as
    LAKECTL_* secrets; `mlflow=True` hands it the `llmops_mlflow` URL as MLFLOW_TRACKING_URI; `postgres=True` hands
    it the `llmops_postgres` DSN (the platform database) as LLMOPS_PLATFORM_DSN; `ray=True` hands it the address of
    the `ray_default` Connection's Ray cluster as LLMOPS_RAY_ADDRESS, if that Connection exists.
    """

    template_fields: Sequence[str] = ("args", "env", "step_resources", "launcher")

    def __init__(
        self,
        *,
        module: str,
        args: Sequence[str] = (),
        step_resources: Resources | Mapping[str, Any] | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        launcher: str | None = None,
        lakefs: bool = False,
        mlflow: bool = False,
        postgres: bool = False,
        ray: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.module = module
        self.args = args if _from_upstream(args) else list(args)
        self.step_resources = step_resources or Resources()
        self.image = image
        self.env = dict(env or {})
        self.launcher = launcher
        self.lakefs = lakefs
        self.mlflow = mlflow
        self.postgres = postgres
        self.ray = ray
        self._launcher: Launcher | None = None
        self._describe()  # validate at parse time, so a bad step fails the DAG import, not a run

    def _describe(self, secrets: dict[str, str] | None = None) -> Step:
        extra = {"image": self.image} if self.image else {}
        resources = self.step_resources
        if isinstance(resources, Mapping):
            resources = Resources(**resources)
        elif not isinstance(resources, Resources):  # still an upstream reference at parse time
            resources = Resources()
        return Step(
            name=self.task_id, module=self.module, args=() if _from_upstream(self.args) else tuple(self.args),
            resources=resources, env=self.env, secrets=secrets or {}, **extra,
        )

    def execute(self, context: Any) -> None:
        # Endpoints are resolved at run time from Connections, never baked into the DAG file.
        secrets = lakefs_endpoint().to_env() if self.lakefs else {}
        if self.mlflow:
            secrets["MLFLOW_TRACKING_URI"] = http_url(MLFLOW)
        if self.postgres:
            from tasks.common.platform_db import ENV_DSN

            secrets[ENV_DSN] = postgres_dsn()
        if self.ray and (address := ray_address()):
            from tasks.curation.steps import ENV_RAY_ADDRESS

            secrets[ENV_RAY_ADDRESS] = address
        self._launcher = make_launcher(self.launcher or None)
        self._launcher.run(self._describe(secrets), context, self.log)

    def on_kill(self) -> None:
        if self._launcher is not None:
            self._launcher.kill()


def _from_upstream(value: Any) -> bool:
    """True for an XComArg (resolved when the task runs), which has no items to check at parse time."""
    return isinstance(value, XComArg)
