"""Endpoints the DAGs use, read from Airflow Connections (AIRFLOW_CONN_* env works too)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from tasks.common.versioned_data import LakeFSEndpoint

POSTGRES = "llmops_postgres"
MLFLOW = "llmops_mlflow"
TRITON = "llmops_triton"
LAKEFS = "llmops_lakefs"
RAY = "ray_default"
RAY_CLIENT_PORT = 10001


def postgres_dsn(conn_id: str = POSTGRES) -> str:
    conn = BaseHook.get_connection(conn_id)
    auth = quote(conn.login or "", safe="")
    if conn.password:
        auth += ":" + quote(conn.password, safe="")
    return f"postgresql://{auth}@{conn.host}:{conn.port or 5432}/{conn.schema}"


def http_url(conn_id: str) -> str:
    """Base URL of an HTTP service connection; `schema` carries http/https."""
    conn = BaseHook.get_connection(conn_id)
    scheme = conn.schema or "http"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{conn.host}{port}"


def triton_grpc(conn_id: str = TRITON) -> str:
    """host:port of Triton's gRPC endpoint (streaming generation): the connection's extra `grpc_port`."""
    conn = BaseHook.get_connection(conn_id)
    return f"{conn.host}:{conn.extra_dejson.get('grpc_port', 8001)}"


def triton_metrics(conn_id: str = TRITON) -> str:
    """URL of Triton's Prometheus endpoint: the connection's extra `metrics_port`."""
    conn = BaseHook.get_connection(conn_id)
    return f"http://{conn.host}:{conn.extra_dejson.get('metrics_port', 8002)}/metrics"


def lakefs_endpoint(conn_id: str = LAKEFS) -> LakeFSEndpoint:
    """login/password of the connection are lakeFS's access key id / secret access key."""
    from tasks.common.versioned_data import LakeFSEndpoint  # the lakefs SDK is too heavy for DAG parsing

    conn = BaseHook.get_connection(conn_id)
    return LakeFSEndpoint(http_url(conn_id), conn.login or "", conn.password or "")


def ray_address(conn_id: str = RAY) -> str | None:
    """`ray://host:port` of a Ray cluster's client server (e.g. a KubeRay head Service), or None when no such
    Connection exists: the step then starts Ray on its own machine."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    return f"ray://{conn.host}:{conn.port or RAY_CLIENT_PORT}"
