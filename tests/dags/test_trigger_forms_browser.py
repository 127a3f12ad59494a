"""Every DAG the API lists triggers from the Airflow UI's form with its defaults, in a real browser (issue 7).

Playwright drives the system chromium that `stack/install.sh` apt-installs; no browser is ever downloaded.
Each trigger form's screenshot lands in `.artifacts/trigger-forms/` for people to look at. DAGs stay paused
while the test triggers them (the form's "Unpause on trigger" is cleared), so a run only queues, and it is
marked failed before the next DAG's turn: the default Params point at real data, and the CPU belongs to the
other tests.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from stack import airflow
from stack.airflow_api import AirflowClient
from tests.stack.harness import REPO, RunningStack

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = REPO / ".artifacts" / "trigger-forms"
DAG_FILES = {p.name for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_")}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no `chromium` on PATH and Playwright may not download one: run `bash stack/install.sh` as root "
        "(or with passwordless sudo), which apt-installs it, or `apt-get install chromium`",
    ),
]


@pytest.fixture(scope="module")
def client(running_stack: RunningStack) -> AirflowClient:
    client = AirflowClient.for_stack(running_stack.cfg)
    wait_until_every_dag_file_is_parsed(client)
    return client


@pytest.fixture(scope="module")
def page(running_stack: RunningStack) -> Iterator[Page]:
    """One browser session, logged in as the admin user through SimpleAuthManager's login page."""
    base = airflow.api_url(running_stack.cfg)
    expect.set_options(timeout=20_000)  # the UI shares 2 cores with the whole stack
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 900})
            page.goto("/")
            page.get_by_label("Username").fill(airflow.ADMIN_USER)
            page.get_by_label("Password").fill(airflow.admin_password(running_stack.cfg))
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/")
            yield page
        finally:
            browser.close()


def test_every_dag_triggers_from_its_form_with_defaults(client: AirflowClient, page: Page):
    for dag in list_dags(client):
        dag_id = dag["dag_id"]
        defaults = {name: param["value"] for name, param in params_of(client, dag_id).items()}
        with paused_and_cleaned_up(client, dag_id) as before:
            form = open_trigger_form(page, dag)
            screenshot(page, form, dag_id)
            submit = form.get_by_test_id("trigger-dag-submit")
            expect(submit, f"{dag_id}: the form's Trigger button is disabled with the defaults").to_be_enabled()
            submit.click()
            expect(page).to_have_url(re.compile(rf"/dags/{re.escape(dag_id)}/runs/"))
            run = client._call("GET", f"/dags/{dag_id}/dagRuns/{new_run(client, dag_id, before)}")
        assert run["triggered_by"] == "ui", (dag_id, run)
        assert run["conf"] == defaults, f"{dag_id}: the form sent {run['conf']}, the defaults are {defaults}"


def test_form_refuses_a_value_that_breaks_its_rule(client: AirflowClient, page: Page):
    dag = next(d for d in list_dags(client) if d["dag_id"] == "curate_corpus")
    pattern = params_of(client, "curate_corpus")["repo"]["schema"]["pattern"]
    with paused_and_cleaned_up(client, "curate_corpus") as before:
        form = open_trigger_form(page, dag)
        form.locator("[name='element_repo']").fill("Not A Repo!")
        form.get_by_test_id("trigger-dag-submit").click()
        refusal = form.get_by_text("Invalid input for param repo")
        expect(refusal).to_contain_text(f"'Not A Repo!' does not match '{pattern}'")
        screenshot(page, form, "curate_corpus-refused-repo")
        assert run_ids(client, "curate_corpus") == before, "a run was created from a refused form"


# --- the UI ------------------------------------------------------------------------------------------------


def open_trigger_form(page: Page, dag: dict[str, Any]) -> Locator:
    """The DAG page's Trigger dialog, loaded, with "Unpause on trigger" cleared (the DAG is paused)."""
    page.goto(f"/dags/{dag['dag_id']}")
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    expect(form.get_by_role("heading", name=f"Trigger Dag - {dag['dag_display_name']}")).to_be_visible()
    unpause_label = f"Unpause {dag['dag_display_name']} on trigger"
    unpause = form.get_by_role("checkbox", name=unpause_label)
    expect(unpause).to_be_checked()
    form.get_by_text(unpause_label).click()  # the styled box over the input takes the click
    expect(unpause).not_to_be_checked()
    return form


def screenshot(page: Page, form: Locator, name: str) -> None:
    """The whole dialog: the viewport grows to fit it first, or the screenshot cuts the form off."""
    box = form.bounding_box()
    assert box is not None, f"{name}: the trigger form is not on screen"
    page.set_viewport_size({"width": 1280, "height": max(900, math.ceil(box["height"]) + 100)})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    form.screenshot(path=SCREENSHOTS / f"{name}.png")


# --- the REST API ------------------------------------------------------------------------------------------


def wait_until_every_dag_file_is_parsed(client: AirflowClient, timeout: float = 180) -> None:
    """The dag-processor parses after `stack up` returns; a file that fails to import fails the test here."""
    deadline = time.monotonic() + timeout
    while not DAG_FILES <= (parsed := {dag["relative_fileloc"] for dag in list_dags(client)}):
        errors = client._call("GET", "/importErrors")["import_errors"]
        assert not errors, "DAG files failed to import:\n" + "\n".join(e["stack_trace"] for e in errors)
        assert time.monotonic() < deadline, f"not parsed within {timeout:.0f}s: {sorted(DAG_FILES - parsed)}"
        time.sleep(2)


def list_dags(client: AirflowClient) -> list[dict[str, Any]]:
    dags: list[dict[str, Any]] = []
    while batch := client._call("GET", "/dags", params={"limit": 100, "offset": len(dags)})["dags"]:
        dags += batch
    return dags


def params_of(client: AirflowClient, dag_id: str) -> dict[str, dict[str, Any]]:
    return client._call("GET", f"/dags/{dag_id}/details")["params"] or {}


def run_ids(client: AirflowClient, dag_id: str) -> set[str]:
    runs = client._call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]
    return {run["dag_run_id"] for run in runs}


def new_run(client: AirflowClient, dag_id: str, before: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not (created := run_ids(client, dag_id) - before):
        assert time.monotonic() < deadline, f"{dag_id}: no run appeared within {timeout:.0f}s of submitting the form"
        time.sleep(1)
    assert len(created) == 1, f"{dag_id}: one submit made runs {sorted(created)}"
    return created.pop()


@contextmanager
def paused_and_cleaned_up(client: AirflowClient, dag_id: str) -> Iterator[set[str]]:
    """Paused while the test triggers it, whatever earlier tests did, so a new run only queues; on the way out
    every run made meanwhile is marked failed and the pause state is restored. Yields the runs there before."""
    was_paused = client._call("GET", f"/dags/{dag_id}")["is_paused"]
    client._call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    before = run_ids(client, dag_id)
    try:
        yield before
    finally:
        for run_id in run_ids(client, dag_id) - before:
            client._call("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
        client._call("PATCH", f"/dags/{dag_id}", json={"is_paused": was_paused})
