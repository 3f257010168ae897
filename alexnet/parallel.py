"""How CPU-bound stages (validate, preprocess) spread work over the cores.

Workers are started by a fork server: each begins from a clean interpreter instead of a fork of
the caller, which may already run threads (TensorFlow's, Prefect's, pytest plugins') whose locks
a forked child would inherit held. The work functions live in importable alexnet modules, which
is all the fork server needs.

Starting a pool costs 0.14-0.28 s here, while an image decodes in ~4 ms: an incremental rerun
that has only a few new images to look at does them in-process instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, Callable, Iterator

MIN_JOBS_FOR_POOL = 64  # below this, the pool's start-up costs more than it saves


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of `workers` processes (default: one per core)."""
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                               mp_context=multiprocessing.get_context("forkserver"))


def use_pool(jobs: int, workers: int | None = None) -> bool:
    """Whether `jobs` calls are worth a process pool of `workers`."""
    return (workers or os.cpu_count() or 1) > 1 and jobs >= MIN_JOBS_FOR_POOL


@contextlib.contextmanager
def mapper(jobs: int, workers: int | None = None) -> Iterator[Callable[..., Iterator[Any]]]:
    """An ordered `map` for `jobs` calls: a process pool's, or the built-in one for little work."""
    if not use_pool(jobs, workers):
        yield map
        return
    with process_pool(workers) as pool:
        yield partial(pool.map, chunksize=16)
