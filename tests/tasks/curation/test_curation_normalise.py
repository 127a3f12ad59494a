from __future__ import annotations

from curation_harness import reasons, run_stage

from tasks.curation.records import make_record
from tasks.curation.stages.normalise import Normalise, NormaliseConfig


def test_repairs_a_few_bad_bytes_and_drops_mostly_invalid_text() -> None:
    stage = Normalise(NormaliseConfig(max_invalid_fraction=0.05))
    good = "A sentence of plain text that is long enough to tolerate one bad byte here:\udcff."
    kept = run_stage(stage, [good, "ok \udc80\udc81\udc82\udc83", "bad \ufffd\ufffd\ufffd"])
    assert [r["text"] for r in kept] == [good.replace("\udcff", "")]
    assert kept[0]["meta"]["repaired_chars"] == 1
    assert reasons(stage) == {"doc-1": "invalid_utf8", "doc-2": "invalid_utf8"}


def test_undoes_mojibake_and_applies_nfc() -> None:
    kept = run_stage(Normalise(NormaliseConfig()), ["The cafÃ© serves crÃ¨me brÃ»lÃ©e.", "Cafe\u0301 d\u00e9j\u00e0"])
    assert [r["text"] for r in kept] == ["The café serves crème brûlée.", "Caf\u00e9 déjà"]


def test_strips_html_boilerplate_and_entities_but_not_angle_brackets_in_plain_text() -> None:
    stage = Normalise(NormaliseConfig())
    page = ("<html><head><title>T</title><script>var x = 1;</script></head><body><nav>Home | About</nav>"
            "<p>Fish &amp; chips &lt;3</p><p>Second   para</p><footer>(c) 2026</footer></body></html>")
    html_record = stage.apply(make_record("p.html", page, "s", {"content_type": "text/html"}))
    assert html_record["text"] == "Fish & chips <3\n\nSecond para"
    plain = stage.apply(make_record("t", "if a <b> c then &amp;", "s"))
    assert plain["text"] == "if a <b> c then &amp;"


def test_collapses_whitespace_and_invisible_characters() -> None:
    kept = run_stage(Normalise(NormaliseConfig()), ["  a \t b\u200b \r\n\r\n\r\n\n c\x00  "])
    assert kept[0]["text"] == "a b\n\nc"


def test_drops_empty_and_oversized_with_reasons() -> None:
    stage = Normalise(NormaliseConfig(max_chars=40))
    run_stage(stage, ["", " \n\t\u200b ", "x" * 41, "<!DOCTYPE html><nav>only nav</nav>"])
    assert reasons(stage) == {"doc-0": "empty", "doc-1": "empty", "doc-2": "oversized", "doc-3": "empty"}
    assert stage.quarantine[2].detail == "41 characters > max_chars 40"
