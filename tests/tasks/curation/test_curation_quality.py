from __future__ import annotations

import re

import pytest
from curation_harness import reasons, run_stage

from tasks.curation.stages.quality import Quality, QualityConfig, TextStats, strip_literal_blocks, top_ngram_fraction

PROSE = (
    "The reading room of the city library is open to every visitor from Monday to Friday. Books that "
    "are due while the building is closed can be returned later without any fee, and the staff will "
    "help with questions about the new catalogue that replaced the old card index this spring."
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Too short to be a document.", "quality:word_count"),
        (
            " ".join(["incomprehensibilities"] * 10 + ["the", "and"] * 5 + ["notwithstanding"] * 10),
            "quality:mean_word_length",
        ),
        (PROSE + " #tag" * 12, "quality:symbol_ratio"),
        (PROSE + " 1234567890" * 20, "quality:digit_ratio"),
        (PROSE + " -- ==" * 20, "quality:alpha_words"),
        ("zork blat frim " * 10, "quality:stop_words"),
        (
            "\n".join(f"- the item number {word} and more" for word in "abcdefghij") + "\n" + PROSE.replace(". ", " "),
            "quality:bullet_lines",
        ),
        (
            "\n".join(f"the story of {word} and then the people in the town went home..." for word in "abcdefghij"),
            "quality:ellipsis_lines",
        ),
        ("\n\n".join(f"the section about {word} and its parts" for word in "abcdefghij"), "quality:punctuation"),
        ("\n".join([PROSE] * 3), "quality:duplicate_lines"),
        (PROSE + " " + " ".join(["of the and"] * 8) + ".", "quality:repeated_ngrams"),
    ],
)
def test_each_rule_drops_with_its_own_reason(text: str, reason: str) -> None:
    stage = Quality(QualityConfig())
    run_stage(stage, [text])
    assert reasons(stage) == {"doc-0": reason}


def test_clean_prose_passes_every_rule() -> None:
    assert len(run_stage(Quality(QualityConfig()), [PROSE])) == 1


def test_top_ngram_fraction_is_zero_without_repeats_and_counts_characters() -> None:
    assert top_ngram_fraction(["a", "b", "c"], 2) == 0.0
    assert top_ngram_fraction(["ab", "cd", "ab", "cd"], 2) == pytest.approx(8 / 8)


def _reason(text: str) -> str | None:
    stage = Quality(QualityConfig())
    run_stage(stage, [text])
    return reasons(stage).get("doc-0")


def test_alpha_words_does_not_count_the_punctuation_of_a_code_list() -> None:
    """The commas and brackets of "[`0`, `0.5`, ...]" go with the code; punctuation on its own still counts."""
    clean = (
        "The format has no infinity and no NaN, and its possible absolute values are [`0`, `0.5`, `1`, "
        "`1.5`, `2`, `3`, `4`, `6`], which is why it is used with a shared scale for each block of values."
    )
    assert _reason(clean) is None
    assert _reason(clean + " -- == ;" * 12) == "quality:alpha_words"


def test_a_line_opening_with_an_ellipsis_is_prose_and_doctest_continuations_are_code() -> None:
    clean = (
        "... and many more features, but most importantly: our maintainers have a long track record of "
        "keeping the library safe and stable for all of its users."
    )
    assert _reason(clean) is None
    assert strip_literal_blocks(">>> total = add(\n...     1, 2)\n... and the prose again.\nDone.") == "Done."
    assert _reason("\n\n".join(f"the section about {word} and its parts" for word in "abcdefghij")) == (
        "quality:punctuation"
    )


def test_duplicate_lines_ignores_code_fence_lines_but_not_repeated_content() -> None:
    clean = (
        "Create a virtual environment first:\n\n```sh\nvirtualenv venv\n```\n\nInstall the package with "
        "its test extras, which pulls in pytest and the linters:\n\n```sh\npip install -e '.[test]'\n```\n\n"
        "While developing, run the tests of the module you changed:\n\n```sh\npytest tests/test_node.py\n"
        "```\n\nBefore you open a pull request, make sure the hooks are enabled:\n\n```sh\npre-commit "
        "install\n```\n\nThe documentation is built by Sphinx:\n\n```sh\nmake docs\n```"
    )
    assert _reason(clean) is None
    repeated = "Click here to subscribe to the newsletter and the offers."
    assert _reason(clean + "\n" + "\n".join([repeated] * 8)) == "quality:duplicate_lines"


def test_repeated_ngrams_reads_a_link_as_one_name_and_code_as_a_word_that_does_not_compete() -> None:
    links = (
        "If you run the [Databricks Terraform Provider](https://a.example/tf), the [Databricks SDK for Go]"
        "(https://a.example/go), the [Databricks CLI](https://a.example/cli), or applications that target "
        "the Databricks SDKs for other languages, they will most likely all work together nicely. By default, "
        "the Databricks SDK for Python tries the following [authentication](https://a.example/auth) methods, "
        "in the following order, until one of them succeeds:"
    )
    code = (
        "Colour detection can be turned off or on in several ways, in this order of precedence:\n"
        "1. Calling `colored` or `cprint` with a truthy `no_color` disables colour.\n"
        "2. Calling `colored` or `cprint` with a truthy `force_color` forces colour.\n"
        "3. Setting the `ANSI_COLORS_DISABLED` environment variable to any non-empty value disables colour.\n"
        "4. Setting the [`NO_COLOR`](https://a.example/no) environment variable to any non-empty value disables "
        "colour.\n5. Setting the [`FORCE_COLOR`](https://a.example/force) environment variable to any non-empty "
        "value forces colour.\n6. Setting the `TERM` environment variable to `dumb` disables colour."
    )
    assert _reason(links) is None
    assert _reason(code) is None
    assert _reason(PROSE + " " + " ".join(["[buy the best](https://shop.example)"] * 30)) == "quality:repeated_ngrams"
    assert _reason(PROSE + " " + " ".join(["buy `the` best offer"] * 30)) == "quality:repeated_ngrams"


def test_bullet_lines_counts_list_items_that_are_fragments_not_sentences() -> None:
    news = [
        "- **[2026/01]** Dynamic context parallelism gives up to 1.48x speedup for variable-length training.",
        "- **[2025/12]** Development has moved to GitHub, and all CI now happens in the open.",
        "- **[2025/10]** An early access branch with experimental features is available.",
        "- **[2025/08]** The roadmap for expert models covers parallelism strategies and FP8 optimizations.",
        "- **[2025/06]** Best practices and tuned configurations for training are collected in a model zoo.",
        "- **[2025/05]** Version 0.11 brings multi-data center training ([blog](https://a.example/blog)).",
        "- **[2024/11]** Checkpoints can be saved in parallel while the next step runs.",
        "- **[2024/09]** Pipeline schedules with virtual stages reduce the bubble for long pipelines.",
        "- **[2024/07]** Version 0.7 improves scalability and resiliency and adds multimodal training.",
        "- **[2024/06]** Models that mix state space layers and attention are supported now!",
    ]
    wrapped = (
        "- **[2025/10]** A bidirectional converter between checkpoint formats ships with production\n"
        "  recipes for popular models."
    )
    assert _reason("Latest News\n\n" + "\n".join(news)) is None
    assert _reason("Latest News\n\n" + "\n".join([*news, wrapped])) is None
    fragments = [re.sub(r"[.!](\)?)$", r"\1", item) for item in news]
    assert _reason("Latest News\n\n" + "\n".join(fragments)) == "quality:bullet_lines"


def test_an_inline_code_span_starting_with_underscores_is_no_rst_link() -> None:
    text = (
        "- `a.Adder` now supports `Param.QUAL` that adds the name of the module, or `__main__` if the "
        "module is the entry point. See the `guide <https://a.example>`_ and `__name__`."
    )
    prose = " ".join(TextStats(text).prose.split())
    assert prose == (
        "- now supports that adds the name of the module, or if the module is the entry point. See the guide and"
    )
    assert _reason(text) is None
