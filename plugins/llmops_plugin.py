"""The platform's Airflow plugin: what Airflow itself must load (the rest of plugins/ is imported as a package)."""

from airflow.plugins_manager import AirflowPlugin

from plugins.answer_api import app as answer_app
from plugins.conf_guard import RejectUnknownConf


class LLMOpsPlugin(AirflowPlugin):
    name = "llmops"
    fastapi_root_middlewares = [
        {"middleware": RejectUnknownConf, "args": [], "kwargs": {}, "name": "reject unknown dag-run conf keys"}
    ]
    fastapi_apps = [{"app": answer_app, "url_prefix": "/llmops", "name": "answer path (POST /llmops/answer)"}]
