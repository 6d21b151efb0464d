"""Load the next batch while the current one runs, when a core is free for it: one background thread, in order.

The network releases the GIL inside its kernels, so decoding or rendering the next samples overlaps with the model
instead of adding to it, provided the loader gets a core of its own. Beside an accelerator it does (the torch
threads wait on the device). On the CPU it does only when this machine's torch threads leave a core free: with
every core running one, the loader preempts a thread of torch's OpenMP team and the whole team waits for it at its
next barrier, so loading in the background costs more than loading in turn. Measured on 2 cores with 2 torch
threads (`benchmarks/overhead.py`, 32 tiny-world samples x 10 steps, 6 alternating rounds): the evaluation loop
took 1.29 times the network's time with the rendering in the background, 1.13 with it in turn.

Either way the batches come in order, and an error while loading is raised when that batch's turn comes, after
every earlier batch finished.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

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


def in_turn(items: Iterable[T], load: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, load(item)) in order, each loaded when its turn comes."""
    for item in items:
        yield item, load(item)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def a_core_is_free_for_loading(device: str) -> bool:
    """Whether a loader thread beside this process' network gets a core of its own (see the module docstring):
    always beside an accelerator; on the CPU when the torch threads of the processes launched on this machine
    (``LOCAL_WORLD_SIZE``, torchrun's) leave a core free."""
    if torch.device(device).type != "cpu":
        return True
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return torch.get_num_threads() * local_processes < usable_cpus()


def batches_loaded(items: Iterable[T], load: Callable[[T], R], background: bool) -> Iterator[tuple[T, R]]:
    """(item, load(item)) in order: ``prefetched`` when ``background``, else ``in_turn``."""
    return prefetched(items, load) if background else in_turn(items, load)
