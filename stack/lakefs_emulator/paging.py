"""lakeFS-style listing pages (`after` is exclusive, `next_offset` is the last key returned) and the
`delimiter` grouping of paths into common prefixes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

Item = TypeVar("Item")
DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000


def page(items: Iterable[Item], key: Callable[[Item], str], after: str | None, amount: int | None) -> dict:
    """One page of already-sorted items, in the shape of lakeFS's `{results, pagination}` lists."""
    size = DEFAULT_AMOUNT if amount is None or amount <= 0 else min(amount, MAX_AMOUNT)
    remaining = [item for item in items if not after or key(item) > after]
    chosen = remaining[:size]
    has_more = len(remaining) > size
    return {
        "results": chosen,
        "pagination": {
            "has_more": has_more,
            "next_offset": key(chosen[-1]) if has_more and chosen else "",
            "results": len(chosen),
            "max_per_page": size,
        },
    }


def page_in_order(items: list[Item], key: Callable[[Item], str], after: str | None, amount: int | None) -> dict:
    """Like page() for lists whose order is not by key (commit logs): `after` names the last item seen."""
    keys = [key(item) for item in items]
    start = keys.index(after) + 1 if after and after in keys else 0
    return page(items[start:], key, None, amount)


def group_by_delimiter(
    paths: Iterable[str], prefix: str, delimiter: str | None
) -> list[tuple[str, bool]]:
    """Sorted (path, is_common_prefix) pairs under prefix; paths sharing a delimited prefix collapse to one."""
    grouped: dict[str, bool] = {}
    for path in paths:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if delimiter and delimiter in rest:
            grouped[prefix + rest[: rest.index(delimiter) + len(delimiter)]] = True
        else:
            grouped[path] = False
    return sorted(grouped.items())
