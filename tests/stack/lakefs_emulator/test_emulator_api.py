"""lakeFS semantics of the emulator, driven through the official `lakefs` SDK (and raw HTTP where the SDK
hides the status code)."""

from __future__ import annotations

import hashlib
import re
import signal
import socket

import httpx
import lakefs
import lakefs_sdk
import pytest
from lakefs import exceptions as errs

from stack.lakefs_emulator.service import start_emulator
from stack.process import free_port, stop_pid

ACCESS_KEY, SECRET_KEY = "AKIADURABILITY", "durability-secret"


def http(emulator) -> httpx.Client:  # noqa: ANN001
    return httpx.Client(base_url=f"{emulator.url}/api/v1", auth=(emulator.access_key_id, emulator.secret_access_key),
                        timeout=10)


def test_healthcheck_is_open_and_everything_else_needs_basic_auth(emulator) -> None:  # noqa: ANN001
    assert httpx.get(f"{emulator.url}/api/v1/healthcheck").status_code == 204
    for auth in (None, (emulator.access_key_id, "wrong")):
        response = httpx.get(f"{emulator.url}/api/v1/repositories", auth=auth)
        assert response.status_code == 401
        assert "message" in response.json()


def test_repository_lifecycle_and_name_rules(client: lakefs.Client, emulator) -> None:  # noqa: ANN001
    repo = lakefs.Repository("lifecycle-repo", client=client).create(storage_namespace="local://lc")
    assert repo.properties.default_branch == "main"
    assert [c.message for c in repo.branch("main").log()] == ["Repository created"]
    with pytest.raises(errs.ConflictException):
        lakefs.Repository("lifecycle-repo", client=client).create(storage_namespace="local://lc")
    assert lakefs.Repository("lifecycle-repo", client=client).create(storage_namespace="local://lc", exist_ok=True)
    bad = http(emulator).post("/repositories", json={"name": "Bad_Name", "storage_namespace": "local://x"})
    assert bad.status_code == 400 and "'Bad_Name'" in bad.json()["message"]  # the SDK checks this too
    repo.delete()
    with pytest.raises(errs.NotFoundException):
        lakefs.Repository("lifecycle-repo", client=client).properties  # noqa: B018


def test_branches_names_sources_and_pagination(repo: lakefs.Repository, emulator) -> None:  # noqa: ANN001
    for i in range(5):
        repo.branch(f"b-{i}").create("main")
    with pytest.raises(errs.ConflictException):
        repo.branch("b-0").create("main")
    with pytest.raises(errs.BadRequestException, match="must match"):
        repo.branch("-bad/name").create("main")
    with pytest.raises(errs.NotFoundException, match="nope"):
        repo.branch("b-9").create("nope")
    page = http(emulator).get(f"/repositories/{repo.id}/branches", params={"amount": 2}).json()
    assert [r["id"] for r in page["results"]] == ["b-0", "b-1"]
    assert page["pagination"] == {"has_more": True, "next_offset": "b-1", "results": 2, "max_per_page": 2}
    assert [b.id for b in repo.branches()] == ["b-0", "b-1", "b-2", "b-3", "b-4", "main"]
    repo.branch("b-0").delete()
    with pytest.raises(errs.NotFoundException):
        repo.branch("b-0").delete()
    with pytest.raises(errs.BadRequestException, match="default branch"):
        repo.branch("main").delete()


def test_objects_upload_read_stat_list_copy_delete(repo: lakefs.Repository) -> None:
    branch = repo.branch("work").create("main")
    data = b"0123456789" * 100
    branch.object("dir/a.bin").upload(data, metadata={"origin": "test"})
    branch.object("dir/sub/b.txt").upload(b"b", content_type="text/plain")
    branch.object("top.txt").upload(b"top")
    stat = branch.object("dir/a.bin").stat()
    assert stat.checksum == hashlib.md5(data).hexdigest()
    assert stat.size_bytes == 1000 and stat.metadata == {"origin": "test"}
    with branch.object("dir/a.bin").reader() as reader:
        reader.seek(995)
        assert reader.read() == b"56789"
    assert branch.object("dir/a.bin").reader().read() == data
    listing = [(o.path, type(o).__name__) for o in branch.objects(delimiter="/")]
    assert listing == [("dir/", "CommonPrefix"), ("top.txt", "ObjectInfo")]
    assert [o.path for o in branch.objects(prefix="dir/")] == ["dir/a.bin", "dir/sub/b.txt"]
    assert [o.path for o in branch.objects(max_amount=2)] == ["dir/a.bin", "dir/sub/b.txt"]
    branch.object("dir/a.bin").copy("work", "copy/a.bin")
    assert branch.object("copy/a.bin").reader().read() == data
    branch.object("top.txt").delete()
    branch.object("never-existed").delete()  # lakeFS: deleting a missing object is not an error
    assert not branch.object("top.txt").exists()
    with pytest.raises(errs.ObjectNotFoundException):
        repo.ref("main").object("dir/a.bin").reader().read()


def test_if_none_match_star_refuses_overwrite(repo: lakefs.Repository) -> None:
    branch = repo.branch("x").create("main")
    branch.object("once").upload(b"1", mode="xb")
    with pytest.raises(errs.ObjectExistsException):
        branch.object("once").upload(b"2", mode="xb")
    assert branch.object("once").reader().read() == b"1"


def test_commit_semantics_ids_log_and_ref_expressions(repo: lakefs.Repository) -> None:
    branch = repo.branch("c").create("main")
    with pytest.raises(errs.BadRequestException, match="no changes"):
        branch.commit("nothing")
    assert branch.commit("empty on purpose", allow_empty=True)
    branch.object("f").upload(b"v1")
    first = branch.commit("one", metadata={"k": "v"}).get_commit()
    assert re.fullmatch(r"[0-9a-f]{64}", first.id) and first.metadata == {"k": "v"}
    branch.object("f").upload(b"v2")
    second = branch.commit("two").get_commit()
    assert second.parents == [first.id]
    assert [c.message for c in branch.log()] == ["two", "one", "empty on purpose", "Repository created"]
    assert [c.message for c in branch.log(objects=["f"])] == ["two", "one"]
    assert repo.ref("c~1").get_commit().id == first.id
    assert repo.ref(first.id[:12]).object("f").reader().read() == b"v1"
    assert list(branch.uncommitted()) == []
    branch.object("g").upload(b"staged")
    assert repo.ref("c").object("g").exists() and not repo.ref("c@").object("g").exists()
    branch.reset_changes("object", "g")
    assert not branch.object("g").exists()


def test_diff_two_dot_and_three_dot(repo: lakefs.Repository) -> None:
    main = repo.branch("main")
    feature = repo.branch("feature").create("main")
    other = repo.branch("other").create("main")
    other.object("o").upload(b"o")
    other.commit("o")
    other.merge_into(main)
    feature.object("f").upload(b"f")
    feature.commit("f")
    three = [(c.type, c.path) for c in main.diff(feature)]
    two = [(c.type, c.path) for c in main.diff(feature, type="two_dot")]
    assert three == [("added", "f")]
    assert two == [("added", "f"), ("removed", "o")]


def test_merge_conflicts_and_strategies(repo: lakefs.Repository, emulator) -> None:  # noqa: ANN001
    setup = repo.branch("setup").create("main")
    setup.object("shared").upload(b"base")
    setup.commit("base")
    setup.merge_into(repo.branch("main"))
    left = repo.branch("left").create("main")
    right = repo.branch("right").create("main")
    left.object("shared").upload(b"left")
    left.commit("left")
    right.object("shared").upload(b"right")
    right.object("right-only").upload(b"r")
    right.commit("right")
    left.merge_into(repo.branch("main"))
    response = http(emulator).post(f"/repositories/{repo.id}/refs/right/merge/main", json={})
    assert response.status_code == 409 and "shared" in response.json()["message"]
    with pytest.raises(errs.BadRequestException, match="strategy"):
        right.merge_into(repo.branch("main"), strategy="bogus")
    dest_wins = repo.branch("dw").create("main")
    right.merge_into(dest_wins, strategy="dest-wins")
    assert dest_wins.object("shared").reader().read() == b"left" and dest_wins.object("right-only").exists()
    right.merge_into(repo.branch("main"), strategy="source-wins")
    assert repo.ref("main").object("shared").reader().read() == b"right"
    with pytest.raises(errs.BadRequestException, match="no changes"):
        right.merge_into(repo.branch("main"))
    merge_commit = repo.ref("main").get_commit()
    assert len(merge_commit.parents) == 2
    repo.branch("main").object("dirty").upload(b"x")
    with pytest.raises(errs.BadRequestException, match="uncommitted"):
        left.merge_into(repo.branch("main"), allow_empty=True)


def test_tags_and_revert(repo: lakefs.Repository) -> None:
    branch = repo.branch("t").create("main")
    branch.object("a").upload(b"a")
    commit_a = branch.commit("a").get_commit().id
    repo.tag("v1.0").create(commit_a)
    assert repo.tag("v1.0").get_commit().id == commit_a
    with pytest.raises(errs.ConflictException):
        repo.tag("v1.0").create("main")
    assert [t.id for t in repo.tags()] == ["v1.0"]
    branch.object("a").delete()
    branch.object("b").upload(b"b")
    branch.commit("swap")
    branch.revert("t")
    assert branch.object("a").reader().read() == b"a" and not branch.object("b").exists()
    assert branch.get_commit().message == "Revert t"
    repo.tag("v1.0").delete()
    with pytest.raises(errs.NotFoundException):
        repo.tag("v1.0").get_commit()


def test_cherry_pick_overrides_replace_message_and_metadata_but_not_its_origin(repo: lakefs.Repository,
                                                                              emulator) -> None:  # noqa: ANN001
    feature = repo.branch("f").create("main")
    feature.object("f").upload(b"f")
    origin = feature.commit("add f", metadata={"a": "1"}).get_commit()
    answer = http(emulator).post(f"/repositories/{repo.id}/branches/main/cherry-pick", json={
        "ref": origin.id, "commit_overrides": {"message": "picked", "metadata": {"b": "2"}}}).json()
    assert answer["message"] == "picked"
    assert answer["metadata"] == {"b": "2", "cherry-pick-origin": origin.id, "cherry-pick-committer": "admin"}


def test_branch_protection_refuses_direct_writes_but_allows_merges(repo: lakefs.Repository,
                                                                  client: lakefs.Client) -> None:
    api = client.sdk_client.repositories_api
    api.set_branch_protection_rules(repo.id, [lakefs_sdk.BranchProtectionRule(pattern="main")])
    assert [r.pattern for r in api.get_branch_protection_rules(repo.id)] == ["main"]
    with pytest.raises((errs.ForbiddenException, errs.PermissionException)):
        repo.branch("main").object("x").upload(b"x")
    with pytest.raises(errs.ForbiddenException):
        repo.branch("main").commit("direct", allow_empty=True)
    feature = repo.branch("feature").create("main")
    feature.object("x").upload(b"x")
    feature.commit("x")
    feature.merge_into(repo.branch("main"))
    assert repo.ref("main").object("x").exists()


def test_kill_mid_upload_and_restart_keeps_committed_data(tmp_path) -> None:  # noqa: ANN001
    data_dir, port = tmp_path / "data", free_port()
    process = start_emulator(data_dir, port, ACCESS_KEY, SECRET_KEY, run_dir=tmp_path / "run")
    try:
        client = lakefs.Client(host=process.url, username=ACCESS_KEY, password=SECRET_KEY)
        repo = lakefs.Repository("durable", client=client).create(storage_namespace="local://durable")
        branch = repo.branch("w").create("main")
        branch.object("kept").upload(b"committed bytes")
        committed = branch.commit("keep").get_commit().id
        branch.object("staged").upload(b"staged bytes")
        with socket.create_connection(("127.0.0.1", port)) as sock:  # an upload that never finishes
            auth = httpx.BasicAuth(ACCESS_KEY, SECRET_KEY)._auth_header  # noqa: SLF001
            sock.sendall(
                b"POST /api/v1/repositories/durable/branches/w/objects?path=partial HTTP/1.1\r\n"
                b"Host: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n"
                + f"Authorization: {auth}\r\n\r\n".encode() + b"x" * 5000
            )
            stop_pid(process.pid, sig=signal.SIGKILL)
    finally:
        stop_pid(process.pid)
    process = start_emulator(data_dir, free_port(), ACCESS_KEY, SECRET_KEY, run_dir=tmp_path / "run")
    try:
        client = lakefs.Client(host=process.url, username=ACCESS_KEY, password=SECRET_KEY)
        repo = lakefs.Repository("durable", client=client)
        assert repo.ref(committed).object("kept").reader().read() == b"committed bytes"
        assert repo.ref("w").object("staged").reader().read() == b"staged bytes"
        assert not repo.ref("w").object("partial").exists()
        assert list((data_dir / "blobs" / "tmp").iterdir()) == []
    finally:
        process.stop()
