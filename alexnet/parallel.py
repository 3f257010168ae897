"""The process pool every CPU-bound stage uses (validate, preprocess).

Workers are started by a fork server: each begins from a clean interpreter instead of a fork of
the caller, which may already run threads (TensorFlow's, Prefect's, pytest plugins') whose locks
a forked child would inherit held. The work functions live in importable alexnet modules, which
is all the fork server needs.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of `workers` processes (default: one per core)."""
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                               mp_context=multiprocessing.get_context("forkserver"))
