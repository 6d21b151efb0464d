"""Load the next batch while the current one runs: one background thread, results in order.

The network releases the GIL inside its kernels, so decoding or rendering the next samples (the tiny world renders
~15 ms of CPU per sample) overlaps with the model instead of adding to it. An error while loading is raised when
that batch's turn comes, after every earlier batch finished, exactly as without prefetching.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], load: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, load(item)) in order; load(next item) runs in a background thread while the caller works."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        it = iter(items)
        current = next(it, None)
        if current is None:
            return
        future = pool.submit(load, current)
        for item in it:
            following = pool.submit(load, item)
            yield current, future.result()
            current, future = item, following
        yield current, future.result()
