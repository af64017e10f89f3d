"""Set-up of the worker processes labelscan starts (``distributed.worker.preload``).

A full (generation-2) garbage collection visits every object Python tracks in the process,
with every thread stopped. A worker holds ~100,000 of them before its first task
(distributed's and labelscan's modules), and a scan at a thousand classes makes enough objects
(threshold pieces, selection tasks) to set off one full collection per scan: 86-126 ms of a
2.6 s scan of 200K×1000 on 2 cores, on its critical path. :func:`dask_setup` freezes the
objects of the imports into the permanent generation, which collections skip: 11-27 ms.
"""

import gc

WORKER_SETUP = __name__
"""This module's name, as ``distributed.worker.preload`` lists it."""


def dask_setup(worker=None) -> None:
    """Import the modules labelscan's tasks run, then freeze every object alive (``gc.freeze``)."""
    import labelscan.scan  # noqa: F401 - imported by the first task anyway; frozen with the rest

    gc.collect()
    gc.freeze()
