"""The platform's Airflow plugin: what Airflow itself must load (the rest of plugins/ is imported as a package)."""

from airflow.plugins_manager import AirflowPlugin

from plugins.conf_guard import RejectUnknownConf


class LLMOpsPlugin(AirflowPlugin):
    name = "llmops"
    fastapi_root_middlewares = [
        {"middleware": RejectUnknownConf, "args": [], "kwargs": {}, "name": "reject unknown dag-run conf keys"}
    ]
