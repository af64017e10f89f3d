"""The first cutoff round of each selection family, run from a plan still being made on a worker.

The selection tasks, and so the cutoff rounds, depend on the merged confident joint. The merge of
the joint counts makes the plan itself (:func:`labelscan.plan.selection_planning`), and the
first round's tasks read it there: the driver submits that round before the plan exists, so no
round trip to the driver (a gather, then the next submission: ~10 ms between the joint pass and
the first histograms of a 10M x 10 GPU scan) stands between the joint pass and the cutoffs. Every
step passes a partition's :class:`~labelscan.passes.InputFailure` on, as the passes do.
"""

from __future__ import annotations

import copy

from labelscan import selection
from labelscan.passes import passing_failures
from labelscan.stats import histogram as sparse_histogram


@passing_failures
def family_keys(part, scores=None, facts=None, *, planning, family: int):
    """:func:`labelscan.selection.partition_keys` of family ``family`` of ``planning``
    (:class:`labelscan.plan.SelectionPlanning`)."""
    return selection.partition_keys(part, scores, facts, tasks=planning.families[family])


@passing_failures
def first_histogram(keys, *, planning, family: int):
    """The first round's :func:`labelscan.selection.histogram` of a partition (None when the
    family resolves at once)."""
    step = planning.first_steps[family]
    if step is None:
        return None
    planner = planning.planners[family]
    active, bits = step
    return selection.histogram(keys, tasks=planner.tasks, intervals=planner.intervals, active=active, bits=bits)


@passing_failures
def merge_histograms(*histograms):
    """:func:`labelscan.stats.histogram.merge` of first-round histograms (None for none)."""
    return None if histograms[0] is None else sparse_histogram.merge(*histograms)


@passing_failures
def first_choice(counts, planning, family: int) -> selection.SelectionPlanner:
    """The family's planner advanced by its first round (:func:`labelscan.selection.advance`),
    or, when it resolves at once, a copy of it marked so."""
    planner, step = planning.planners[family], planning.first_steps[family]
    if step is None:
        resolving = copy.deepcopy(planner)
        resolving.resolve_due = True
        return resolving
    return selection.advance(counts, planner, *step)
