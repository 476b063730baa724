"""Benchmarks: ``python -m bench`` (see docs/PERFORMANCE.md for what is measured and why)."""

import os

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_blas_threads() -> None:
    """One BLAS/OpenMP thread unless the caller set otherwise: the benchmarks measure
    single-threaded code paths, and idle BLAS workers spinning on a shared 2-core machine only add
    noise. Takes effect for libraries loaded after the call (and for child processes)."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
