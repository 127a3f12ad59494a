from __future__ import annotations

from curation_harness import reasons, run_stage

from tasks.curation.stages.blocklist import Blocklist, BlocklistConfig


def test_terms_and_domains_drop_with_the_entry_that_matched() -> None:
    stage = Blocklist(BlocklistConfig(terms=("buy cheap followers", "ass"), domains=("spam.example",)))
    run_stage(stage, [
        "Want to BUY cheap   followers?".replace("   ", " "),
        "see https://cdn.spam.example/offer",
        "a classic class assignment",            # word boundaries: no hit inside words
        "notspam.example and spam.example.org",  # a domain does not match inside other domains
        "kiss my ass",
    ])
    assert reasons(stage) == {"doc-0": "blocklist:buy cheap followers", "doc-1": "blocklist:spam.example",
                              "doc-4": "blocklist:ass"}


def test_empty_blocklist_keeps_everything() -> None:
    assert len(run_stage(Blocklist(BlocklistConfig()), ["anything at all"])) == 1
