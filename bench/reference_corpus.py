"""Build the clean reference corpus that measures curation's false drops, from text the rules were not tuned on.

The source is the long description (the README, often with its changelog) in the METADATA of every
permissively licensed distribution installed in `.venv`: versions are pinned by requirements.txt, so any
machine regenerates the same file. The curation rules were written against stdlib docstrings
(`tasks/curation/sample_corpus.py`), never against this text.

A record is chosen by what it is, never by what the curation rules say about it:

- `paragraph`: one prose paragraph (or list item) of at least MIN_WORDS words, re-flowed onto one line;
- `section`: a README section as written (heading, wrapped paragraphs, lists, short code), multi-line;
- `changelog`: one release's entry from a changelog section (version heading and its bullets), multi-line.

Badges, images, raw HTML, tables and directives are left out (markup, not text), and so is any section whose
words are mostly code. Each record names its distribution and licence in `meta`, and a `split` (`dev` or
`holdout`, by a hash of its id): rules are fixed looking at `dev` only, so `holdout` stays unseen text.

    .venv/bin/python bench/reference_corpus.py            # rewrites tests/tasks/curation/data/reference_corpus.jsonl
"""

from __future__ import annotations

import argparse
import email
import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.curation.records import to_jsonl  # noqa: E402

OUT = REPO / "tests" / "tasks" / "curation" / "data" / "reference_corpus.jsonl"
MIN_WORDS = 25  # the sample corpus's MIN_DOC_WORDS: quality.min_words is 20, a deliberate floor, not a judgement
MAX_SECTION_WORDS = 400  # longer sections add bytes to the repository, not kinds of text
PER_DIST = {"paragraph": 12, "section": 4, "changelog": 8}  # so the few huge READMEs do not dominate
PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|Zope Public|ZPL|Unlicense|CC0|HPND)",
                        re.IGNORECASE)
_MD_HEADING = re.compile(r"^#{1,6}\s+\S")
_RST_UNDERLINE = re.compile(r"^([=\-~^*#\"'`+.])\1{2,}\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+\S")
_MARKUP_LINE = re.compile(r"^\s*(?:\[!\[|!\[|<|\.\. |\||\+[-=]|\[[^\]]+\]:\s|[=\-]{3,}[ =\-]*$)")
# A line that is only a link (a "Documentation: <url>" menu), with or without a list marker.
_LINK_ONLY = re.compile(r"^\s*(?:[-*+]\s+)?(?:\[[^\]]*\]\([^)]*\)|`[^`]*<[^>]*>`_|\S+:\s+https?://\S+|https?://\S+)\s*$")
_MD_LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")
_VERSION = re.compile(r"\bv?\d+\.\d+")
_CHANGELOG_TITLE = re.compile(r"change|history|release|news", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    kind: str  # heading | prose | list | code | markup
    lines: tuple[str, ...]
    level: int = 0  # heading level (1 = top); rst levels are assigned in order of first appearance

    @property
    def words(self) -> int:
        return sum(len(line.split()) for line in self.lines)


def licence(meta: email.message.Message) -> str | None:
    """The distribution's licence if it is permissive, else None (its text stays out of the repository)."""
    candidates = [meta.get("License-Expression") or "", *((meta.get("License") or "").splitlines()[:1])]
    candidates += [c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    for candidate in candidates:
        if candidate and PERMISSIVE.search(candidate) and not re.search(r"GPL|MPL|EPL", candidate):
            return candidate.strip()[:60]
    return None


def blocks(text: str) -> list[Block]:
    """Markdown or reStructuredText as blocks; fenced, indented and `::` literal code become `code`."""
    # A fence may follow a heading or sentence without a blank line; give it its own block.
    text = re.sub(r"\n([ \t]*(?:```|~~~))", r"\n\n\1", text.replace("\r\n", "\n"))
    lines = text.split("\n")
    out: list[Block] = []
    rst_levels: list[str] = []
    index, literal_next = 0, False
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        if line.lstrip().startswith(("```", "~~~")):
            fence, body = line.lstrip()[:3], [line]
            index += 1
            while index < len(lines) and not lines[index].lstrip().startswith(fence):
                body.append(lines[index])
                index += 1
            out.append(Block("code", (*body, fence)))
            index += 1
            continue
        paragraph = []
        while index < len(lines) and lines[index].strip():
            paragraph.append(lines[index])
            index += 1
        if len(paragraph) >= 2 and _RST_UNDERLINE.match(paragraph[1]) and len(paragraph[1].strip()) >= len(
                paragraph[0].strip()) - 1:
            if paragraph[1][0] not in rst_levels:
                rst_levels.append(paragraph[1][0])
            out.append(Block("heading", (paragraph[0].strip(),), rst_levels.index(paragraph[1][0]) + 1))
            paragraph = paragraph[2:]
            if not paragraph:
                continue
        if _RST_UNDERLINE.match(paragraph[0]) and len(paragraph) >= 3 and _RST_UNDERLINE.match(paragraph[2]):
            key = "o" + paragraph[0][0]
            if key not in rst_levels:
                rst_levels.append(key)
            out.append(Block("heading", (paragraph[1].strip(),), rst_levels.index(key) + 1))
            continue
        if _MD_HEADING.match(paragraph[0]) and len(paragraph) == 1:
            level = len(paragraph[0]) - len(paragraph[0].lstrip("#"))
            out.append(Block("heading", (paragraph[0].lstrip("#").strip(),), level))
            continue
        indented = all(p.startswith(("  ", "\t")) for p in paragraph)
        if literal_next or (indented and not _LIST_ITEM.match(paragraph[0])) or paragraph[0].startswith(">>>"):
            out.append(Block("code", tuple(paragraph)))
        elif any(_MARKUP_LINE.match(p) for p in paragraph) or all(_LINK_ONLY.match(p) for p in paragraph) \
                or is_link_menu(" ".join(paragraph)):
            out.append(Block("markup", tuple(paragraph)))
        elif _LIST_ITEM.match(paragraph[0]):
            out.append(Block("list", tuple(paragraph)))
        else:
            out.append(Block("prose", tuple(paragraph)))
        literal_next = paragraph[-1].rstrip().endswith("::") and not indented
    return out


def is_link_menu(text: str) -> bool:
    """Three or more links with fewer than ten words around them: navigation, not text."""
    links = _MD_LINK.findall(text)
    return len(links) >= 3 and len(_MD_LINK.sub(" ", text).split()) < 10 + len(links)


def list_items(block: Block) -> Iterator[str]:
    """Each item of a list block with its continuation lines, on one line, marker kept."""
    item: list[str] = []
    for line in block.lines:
        if _LIST_ITEM.match(line) and item:
            yield " ".join(item)
            item = []
        item.append(line.strip())
    if item:
        yield " ".join(item)


def sections(parsed: list[Block]) -> Iterator[list[Block]]:
    """Heading plus the blocks up to the next heading of the same or a higher level."""
    for start, block in enumerate(parsed):
        if block.kind != "heading":
            continue
        body = [block]
        for following in parsed[start + 1:]:
            if following.kind == "heading" and following.level <= block.level:
                break
            body.append(following)
        yield body


def render(section: list[Block]) -> str:
    """The section as written, without markup blocks; code kept (a README shows code)."""
    return "\n\n".join("\n".join(b.lines) for b in section if b.kind != "markup").strip()


def is_text_section(section: list[Block]) -> bool:
    text_words = sum(b.words for b in section if b.kind in ("prose", "list"))
    code_words = sum(b.words for b in section if b.kind == "code")
    return 40 <= text_words <= MAX_SECTION_WORDS and code_words <= text_words


def changelog_entries(parsed: list[Block]) -> Iterator[list[Block]]:
    """After a heading that names a changelog, each heading holding a version number starts one entry, which
    runs to the next such heading (sub-headings such as "Bug fixes" stay inside)."""
    starts = [i for i, b in enumerate(parsed) if b.kind == "heading" and _CHANGELOG_TITLE.search(b.lines[0])]
    if not starts:
        return
    versions = [i for i, b in enumerate(parsed)
                if i > starts[0] and b.kind == "heading" and _VERSION.search(b.lines[0])]
    for start, end in zip(versions, [*versions[1:], len(parsed)], strict=True):
        yield parsed[start:end]


def records_for(dist: str, licence_name: str, body: str) -> Iterator[tuple[str, str, str]]:
    """(id, kind, text) of one distribution's long description, per-kind capped."""
    parsed = blocks(body)
    counts = dict.fromkeys(PER_DIST, 0)

    def take(kind: str) -> bool:
        counts[kind] += 1
        return counts[kind] <= PER_DIST[kind]

    in_changelog: set[int] = set()
    for number, entry in enumerate(changelog_entries(parsed)):
        in_changelog.update(id(b) for b in entry)
        text = render(entry)
        if len(text.split()) >= MIN_WORDS and take("changelog"):
            yield f"{dist}:changelog:{number}", "changelog", text
    for number, section in enumerate(sections(parsed)):
        if not any(id(b) in in_changelog for b in section) and is_text_section(section) and take("section"):
            yield f"{dist}:section:{number}", "section", render(section)
    for number, block in enumerate(parsed):
        if id(block) in in_changelog or block.kind not in ("prose", "list"):
            continue
        texts = list_items(block) if block.kind == "list" else [" ".join(line.strip() for line in block.lines)]
        for item, text in enumerate(texts):
            if len(text.split()) >= MIN_WORDS and take("paragraph"):
                yield f"{dist}:paragraph:{number}.{item}", "paragraph", text


def build() -> list[dict]:
    rows, seen = [], set()
    dists = {d.metadata["Name"].lower(): d for d in metadata.distributions() if d.metadata["Name"]}
    for name in sorted(dists):
        meta = dists[name].metadata
        body = meta.get_payload() or meta.get("Description") or ""
        licence_name = licence(meta)
        if not licence_name or not body.strip():
            continue
        for record_id, kind, text in records_for(name, licence_name, str(body)):
            key = " ".join(text.split()).lower()
            if key in seen:
                continue
            seen.add(key)
            split = "holdout" if hashlib.sha1(record_id.encode()).digest()[0] % 2 else "dev"
            rows.append({"id": record_id, "text": text, "source": f"pypi:{name}",
                         "meta": {"kind": kind, "licence": licence_name, "split": split,
                                  "lines": "multi" if "\n" in text else "single"}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(to_jsonl(rows))
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["meta"]["kind"]] = kinds.get(row["meta"]["kind"], 0) + 1
    print(f"wrote {len(rows)} records to {args.out}: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
