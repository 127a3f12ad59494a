"""Unknown conf keys are refused: 400 at the API (middleware), a failed run if one gets in another way."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from plugins import conf_guard
from plugins.conf_guard import RejectUnknownConf, check_conf, trigger_problem, unknown_conf_keys


def test_unknown_keys_are_listed_sorted():
    assert unknown_conf_keys({"vocab_size": 1, "zz": 2, "aa": 3}, {"vocab_size"}) == ["aa", "zz"]


def test_declared_and_empty_conf_pass():
    assert unknown_conf_keys({"vocab_size": 1}, {"vocab_size", "other"}) == []
    assert unknown_conf_keys(None, {"vocab_size"}) == []


def test_trigger_problem_names_the_key_and_the_accepted_ones():
    body = json.dumps({"logical_date": None, "conf": {"vocab_sise": 1}}).encode()
    assert trigger_problem("curate_corpus", body, {"vocab_size", "repo"}) == (
        "dag run conf has unknown key(s) vocab_sise; curate_corpus accepts only: repo, vocab_size"
    )


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"conf": "x"}', b"{}"])
def test_bodies_the_api_judges_itself_pass_through(body: bytes):
    assert trigger_problem("d", body, {"a"}) is None


def test_unknown_dag_passes_through_for_the_api_to_404():
    assert trigger_problem("nope", b'{"conf": {"x": 1}}', None) is None


@pytest.fixture()
def api(monkeypatch) -> TestClient:
    monkeypatch.setattr(conf_guard, "declared_params", lambda dag_id: {"repo"} if dag_id == "known" else None)

    async def create_run(request):
        return JSONResponse({"created": (await request.json())["conf"]})

    app = Starlette(routes=[Route("/api/v2/dags/{dag_id}/dagRuns", create_run, methods=["POST"])])
    return TestClient(RejectUnknownConf(app))


def test_middleware_refuses_an_unknown_key_before_the_api_sees_it(api: TestClient):
    refused = api.post("/api/v2/dags/known/dagRuns", json={"conf": {"repo": "x", "typo": 1}})
    assert refused.status_code == 400
    assert refused.json() == {"detail": "dag run conf has unknown key(s) typo; known accepts only: repo"}


def test_middleware_hands_a_clean_body_on_intact(api: TestClient):
    accepted = api.post("/api/v2/dags/known/dagRuns", json={"conf": {"repo": "x"}})
    assert accepted.status_code == 200 and accepted.json() == {"created": {"repo": "x"}}


def test_check_conf_task_fails_a_run_with_an_unknown_key():
    dag = SimpleNamespace(dag_id="d", params={"repo": "corpus"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) typo; d accepts only: repo"):
        check_conf.function(dag=dag, dag_run=SimpleNamespace(conf={"typo": 1}))
    check_conf.function(dag=dag, dag_run=SimpleNamespace(conf={"repo": "x"}))
