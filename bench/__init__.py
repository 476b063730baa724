"""Benchmarks: ``python -m bench`` (see docs/PERFORMANCE.md for what is measured and why)."""

import os
import sys

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_blas_threads() -> None:
    """One BLAS/OpenMP thread unless the caller set otherwise: the benchmarks measure
    single-threaded code paths, and idle BLAS workers spinning on a shared 2-core machine only add
    noise. The variables reach libraries loaded after the call and child processes; pools
    already loaded (an entry point whose module imports numpy before its ``main`` pins) are
    limited in place through threadpoolctl (scikit-learn's, so hmmlearn's, dependency)."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        try:
            threads = int(os.environ["OPENBLAS_NUM_THREADS"])
        except ValueError:  # the caller's own value, not a count: leave the pools as they are
            return
        threadpool_limits(limits=threads)
