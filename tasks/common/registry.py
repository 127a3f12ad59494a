"""The model registry: MLflow registered models, the one place that knows how versions are made and found.

A version's artifacts are logged to the producing MLflow run and the version points at them (`runs:/...`), so the
registry stays valid wherever MLflow keeps artifacts. Registration is idempotent: a retry that registers the same
artifact of the same run gets the version the first attempt made. The newest version carries the alias `candidate`,
which deployment picks up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CANDIDATE = "candidate"
CHECKPOINT_TAG = "checkpoint_uri"  # the megatron checkpoint a version was exported from, where one exists
SOURCE_TAG = "llmops.source"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str
    tags: dict[str, str]


def register(uri: str, name: str, run_id: str, local_dir: Path, artifact_path: str,
             tags: Mapping[str, str]) -> ModelVersion:
    """Upload local_dir as the run's artifact_path and register it under `name`; alias `candidate` -> it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    source = f"runs:/{run_id}/{artifact_path}"
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(SOURCE_TAG) == source]
    if existing:
        version = existing[0]
    else:
        client.log_artifacts(run_id, str(local_dir), artifact_path)
        version = client.create_model_version(name, source, run_id=run_id,
                                              tags={**{k: str(v) for k, v in tags.items()}, SOURCE_TAG: source})
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return ModelVersion(name, str(version.version), source, dict(client.get_model_version(name, version.version).tags))


def find(uri: str, name: str, tag: str, value: str) -> ModelVersion | None:
    """The newest version of `name` whose tag equals value, if any."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    matching = sorted((v for v in versions if v.tags.get(tag) == value), key=lambda v: int(v.version))
    if not matching:
        return None
    newest = matching[-1]
    return ModelVersion(name, str(newest.version), newest.source, dict(newest.tags))


def resolve(uri: str, name: str, version_or_alias: str) -> ModelVersion:
    """A version by number or alias (e.g. `candidate`); LookupError naming what is missing."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        found = (client.get_model_version(name, version_or_alias) if version_or_alias.isdigit()
                 else client.get_model_version_by_alias(name, version_or_alias))
    except MlflowException as error:
        raise LookupError(f"base: no registered model version {name}/{version_or_alias} in MLflow at {uri}") from error
    return ModelVersion(name, str(found.version), found.source, dict(found.tags))


def move_alias(uri: str, name: str, alias: str, version: str | None) -> None:
    """Point `alias` at version (None removes it). MLflow keeps no history of this: deployments record their own."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if version is not None:
        client.set_registered_model_alias(name, alias, version)
        return
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" not in str(error.error_code):
            raise
