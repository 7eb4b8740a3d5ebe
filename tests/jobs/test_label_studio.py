"""A round trip through a REAL Label Studio server (label-studio 1.23.2 in its own venv, on 127.0.0.1).

Baton exports a batch, the test creates a project with Baton's labelling config, imports the tasks and annotates
them over the REST API as an annotator would (from the texts shown alone), and Baton imports the export. Then the
annotator corrects one answer in Label Studio (PATCH, same annotation id, later updated_at) and the project is
re-exported: the correction wins, the history is kept, nothing is quarantined, and an identical re-export and the
same annotations read from the task API (annotator as an email there, a numeric id in exports) are no-ops.

Label Studio pins Django and much else, so it lives in its own venv: ``make test`` creates ``.lsvenv``; set
``BATON_LABEL_STUDIO`` to another ``label-studio`` executable to use that. Without one the test skips, saying so.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from jobs.labels.export import export_batch
from jobs.labels.import_ import import_answers
from tests.jobs.test_labels import answer, check_against_truth, make_run

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "annotator@example.com", "baton-test-pw-1"
START_TIMEOUT_S = 600  # first start migrates its SQLite database: ~70 s idle, ~230 s on a loaded 2-core machine


def _executable() -> str | None:
    path = os.environ.get("BATON_LABEL_STUDIO") or str(ROOT / ".lsvenv" / "bin" / "label-studio")
    return path if os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """One Label Studio server for the module: (httpx client with the API token, user email)."""
    exe = _executable()
    if exe is None:
        pytest.skip("Label Studio is not installed: `make test` creates .lsvenv (label-studio==1.23.2), "
                    "or set BATON_LABEL_STUDIO to a label-studio executable")
    data = tmp_path_factory.mktemp("label-studio")
    port, token = _free_port(), secrets.token_hex(20)
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LATEST_VERSION_CHECK": "false",
           "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    log = open(data / "server.log", "w")
    # --internal-host is the bind address (--host alone is not); the legacy token is the `Token T` header
    proc = subprocess.Popen([exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
                             "--username", USER, "--password", PASSWORD, "--user-token", token,
                             "--enable-legacy-api-token"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {token}"},
                          timeout=60)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode}; see {data / 'server.log'}")
            try:
                if client.get("/api/projects").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio did not answer within {START_TIMEOUT_S} s; see {data / 'server.log'}")
            time.sleep(1)
        yield client
    finally:
        client.close()
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group, started above
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _ok(resp: httpx.Response) -> dict | list:
    assert resp.status_code in (200, 201), (resp.request.method, str(resp.request.url), resp.status_code, resp.text[:500])
    return resp.json()


def _export(client: httpx.Client, project: int, path: Path) -> Path:
    path.write_text(json.dumps(_ok(client.get(f"/api/projects/{project}/export", params={"exportType": "JSON"}))))
    return path


@pytest.mark.slow
def test_label_studio_round_trip_with_a_correction(tmp_path, label_studio):
    client = label_studio
    run = make_run(tmp_path, {"root": str(tmp_path / "store")})
    cfg, store = run["cfg"], run["store"]
    res = export_batch(cfg, store, run["task"], str(tmp_path / "batch"), n=4, seed=11, batch="ls7")
    project = _ok(client.post("/api/projects", json={
        "title": "baton ls7", "label_config": Path(res["files"]["labelstudio_config"]).read_text()}))["id"]
    _ok(client.post(f"/api/projects/{project}/import", json=json.loads(Path(res["files"]["labelstudio"]).read_text())))
    tasks = _ok(client.get("/api/tasks", params={"project": project, "page_size": 100}))["tasks"]
    assert len(tasks) == 8
    fields = [f for d in run["task"].dimensions for f, _ in d.fields()]
    ann_of = {}
    for t in tasks:  # the annotator answers from the texts shown alone (Baton's config: Choices per field)
        a = answer(t["data"])
        result = [{"from_name": f, "to_name": "prompt" if f == "quality" else f"answer_{f[-1]}", "type": "choices",
                   "value": {"choices": [a[f]]}} for f in fields]
        ann_of[t["id"]] = _ok(client.post(f"/api/tasks/{t['id']}/annotations", json={"result": result}))
    me = _ok(client.get("/api/current-user/whoami"))
    identities = {USER: USER, str(me["id"]): USER}  # what `annotators: {EMAIL: [ID]}` in the task config gives

    s1 = import_answers(cfg, store, str(_export(client, project, tmp_path / "export-1.json")), identities=identities)
    assert s1["format"] == "labelstudio" and s1["quarantined"] == 0
    labels1 = store.read_table("labels")
    check_against_truth(labels1)

    # the annotator corrects task 0's pairwise answer in Label Studio (same annotation, later updated_at)
    t0 = tasks[0]
    old = answer(t0["data"])["quality"]
    new = {"A": "B", "B": "A", "tie": "A"}[old]
    first = ann_of[t0["id"]]
    fixed = [{**r, "value": {"choices": [new]}} if r["from_name"] == "quality" else r for r in first["result"]]
    patched = _ok(client.patch(f"/api/annotations/{first['id']}", json={"result": fixed}))
    assert patched["id"] == first["id"] and patched["updated_at"] > first["updated_at"]
    s2 = import_answers(cfg, store, str(_export(client, project, tmp_path / "export-2.json")), identities=identities)
    assert s2["quarantined"] == 0 and store.read_table("quarantine").empty  # no "duplicate"/"conflict" rows
    labels2 = store.read_table("labels")
    assert len(labels2) == len(labels1)
    changed = labels2.merge(labels1, on=["request_id", "model", "dimension", "annotator"], suffixes=("", "_old"))
    changed = changed[changed["value"] != changed["value_old"]]
    assert len(changed) == 1 and changed["dimension"].iat[0] == "quality"
    assert changed["annotation_id"].iat[0] == str(first["id"])
    history = json.loads(store.read_document("labels", "ls-ls7.json"))["annotations"][str(first["id"])]
    assert [v["row"]["quality"] for v in history] == [old, new]
    assert s1["annotations"]["new"] == 8
    assert s2["annotations"] == {"new": 0, "corrected": 1, "unchanged": 7, "stale": 0}
    assert set(labels2["annotator"]) == {USER}  # exports say user id 1: mapped to the email

    # a third, identical export and the same annotations read from the task API (completed_by an email there)
    # change nothing: no shard, no quarantine row, no history entry
    before = (store.commits("labels"), store.commits("quarantine"), store.read_document("labels", "ls-ls7.json"))
    s3 = import_answers(cfg, store, str(_export(client, project, tmp_path / "export-3.json")), identities=identities)
    assert not s3["committed"] and s3["annotations"]["unchanged"] == 8
    api = tmp_path / "task-api.json"
    api.write_text(json.dumps([_ok(client.get(f"/api/tasks/{t['id']}")) for t in tasks]))
    assert json.loads(api.read_text())[0]["annotations"][0]["completed_by"]["email"] == USER
    s4 = import_answers(cfg, store, str(api), identities=identities)
    assert not s4["committed"] and s4["annotations"]["unchanged"] == 8
    assert (store.commits("labels"), store.commits("quarantine"),
            store.read_document("labels", "ls-ls7.json")) == before
