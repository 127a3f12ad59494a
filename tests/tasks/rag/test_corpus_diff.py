"""Record-level diff of the one-file curated corpus between two lakeFS commits -> upserts and deletes."""

from __future__ import annotations

import json
import uuid

import pytest

from tasks.common.versioned_data import LakeFSEndpoint, Lineage, VersionedRepo
from tasks.rag import corpus
from tasks.rag.chunking import Document
from tests.tasks.rag.corpus import CORPUS_PATH, publish_corpus


def docs(*pairs: tuple[str, str]) -> dict[str, Document]:
    return {doc_id: Document(doc_id, text, "src") for doc_id, text in pairs}


def test_diff_documents_names_added_changed_and_removed():
    old = docs(("a", "alpha"), ("b", "beta"), ("c", "gamma"))
    new = docs(("a", "alpha"), ("b", "beta, edited"), ("d", "delta"))
    diff = corpus.diff_documents(old, new)
    assert [d.doc_id for d in diff.added] == ["d"]
    assert [d.doc_id for d in diff.changed] == ["b"]
    assert diff.removed == ("c",)
    assert [d.doc_id for d in diff.upserts] == ["d", "b"]
    assert diff.counts() == {"docs_added": 1, "docs_changed": 1, "docs_removed": 1}
    assert corpus.diff_documents(new, new).counts() == {"docs_added": 0, "docs_changed": 0, "docs_removed": 0}


def test_a_changed_source_alone_is_a_change():
    old = {"a": Document("a", "alpha", "pypi:one")}
    assert [d.doc_id for d in corpus.diff_documents(old, {"a": Document("a", "alpha", "pypi:two")}).changed] == ["a"]


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "a", "text": 3}', "line 2: field 'text' must be a string"),
    ('{"text": "x"}', "line 2: field 'id' must be a string"),
    ('{"id": "a", "text": "again"}', "line 2: id 'a' appears twice"),
    ("{not json", "line 2: not JSON"),
])
def test_bad_records_are_refused_naming_the_line(line: str, message: str):
    with pytest.raises(corpus.CorpusError, match=message):
        corpus.parse(('{"id": "a", "text": "ok"}\n' + line).encode(), "where")


def test_diff_between_lakefs_commits(lakefs_endpoint: LakeFSEndpoint):
    repo_name = f"rag-diff-{uuid.uuid4().hex[:8]}"
    records = [{"id": f"doc{n}", "source": "s", "text": f"text {n}"} for n in range(5)]
    first = publish_corpus(lakefs_endpoint, repo_name, records, "v1")
    edited = [{**records[0], "text": "text 0, edited"}, *records[1:4], {"id": "doc9", "source": "s", "text": "new"}]
    second = publish_corpus(lakefs_endpoint, repo_name, edited, "v2")
    repo = VersionedRepo(lakefs_endpoint, repo_name)
    diff = corpus.diff_commits(repo, first, second, CORPUS_PATH)
    assert ([d.doc_id for d in diff.added], [d.doc_id for d in diff.changed], diff.removed) == (
        ["doc9"], ["doc0"], ("doc4",))
    # another file changing leaves the corpus diff empty, decided by lakeFS's diff without reading the corpus
    repo.put_object("main", "curated/stats.json", json.dumps({"n": 5}).encode())
    third = repo.commit("main", "stats only", Lineage("tests", "rag", "stats"))
    assert corpus.diff_commits(repo, second, third, CORPUS_PATH).counts() == {
        "docs_added": 0, "docs_changed": 0, "docs_removed": 0}

