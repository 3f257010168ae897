"""How CPU-bound stages (validate, preprocess) spread work over the cores.

Workers are started by a fork server: each begins from a clean interpreter instead of a fork of
the caller, which may already run threads (TensorFlow's, Prefect's, pytest plugins') whose locks
a forked child would inherit held. The work functions live in importable alexnet modules, which
is all the fork server needs.

Starting a pool of processes costs far more than decoding one Kaggle-sized JPEG (500x375): below
a few hundred images (MIN_JOBS_FOR_POOL) the pool costs more than it saves, so an incremental
rerun that has only the new images to look at does them in-process.

Work that spends its time in Pillow's C code, which releases the GIL while it decodes and
resizes, can run on threads instead (`mapper(..., threads=True)`): they start at once and hand
back arrays without pickling them (preprocess). `make bench` row 1 times each stage's share of
getting a JPEG folder to training-ready pixels, row 9 an incremental rerun. Validation keeps
processes: it sets Pillow's process-wide pixel limit and warning filters around every untrusted
file it opens.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Iterator

MIN_JOBS_FOR_POOL = 256  # below this, the pool's start-up costs more than it saves


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of `workers` processes (default: one per core)."""
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                               mp_context=multiprocessing.get_context("forkserver"))


def use_pool(jobs: int, workers: int | None = None) -> bool:
    """Whether `jobs` calls are worth a process pool of `workers`."""
    return (workers or os.cpu_count() or 1) > 1 and jobs >= MIN_JOBS_FOR_POOL


@contextlib.contextmanager
def mapper(jobs: int, workers: int | None = None,
           threads: bool = False) -> Iterator[Callable[..., Iterator[Any]]]:
    """An ordered `map` for `jobs` calls: a pool's, or the built-in one for little work.

    threads=True: a thread pool, for functions that release the GIL for most of their time."""
    n = workers or os.cpu_count() or 1
    if threads and n > 1 and jobs > 1:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="alexnet") as threads_pool:
            yield threads_pool.map
        return
    if not use_pool(jobs, workers):
        yield map
        return
    with process_pool(workers) as pool:
        yield partial(pool.map, chunksize=16)
