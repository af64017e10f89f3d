"""The Confident Learning engine: passes over partitions, reductions, and the driver's plan.

::

    read+group ─▶ label counts ──(K per partition)──▶ class layout (a task)
               ─▶ threshold pieces ──tree merge──▶ exact confident thresholds
               ─▶ row facts (sparse confident joint, argmax, reduce mask) ──tree merge──▶ plan (O(K²))
               ─▶ selection rounds (histogram refine / resolve) ──▶ per-partition cutoffs (a task)
               ─▶ flag pass (caller: in-memory results or written outputs)

Up to the first cutoff round, every pass is submitted at once (the driver waits only to time the
stages, and for the partitions' places): the merge of the joint counts makes the plan on its
worker (:func:`labelscan.plan.selection_planning`) and the first round runs from it
(:mod:`labelscan.planned_round`); later rounds are driven from the driver, the cutoffs are
finished on a worker and the caller submits the flag pass at once.

Works on any :mod:`labelscan.runner` runner. Only class counts, O(K²) states, histograms and
a bounded number of selection candidates travel to the driver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from labelscan import passes, plan, planned_round, selection
from labelscan.options import LOW_SCORE_FILTERS, NOISE_RATE_FILTERS, ScanOptions
from labelscan.stats import histogram as sparse_histogram


@dataclass
class Analysis:
    """Everything known after the driver planned the flag pass.

    Attributes
    ----------
    parts, facts : list
        Per-partition handles (worker-resident on Dask).
    family_keys : list of list
        Per partition, per selection family: its cached key images, or ``(part, scores, facts)`` to
        compute them from.
    stats : plan.NoiseStatistics
    request : passes.FlagRequest
        The same for every partition.
    family_cutoffs : list
        Per selection family: its :class:`~labelscan.selection.Cutoffs` (every partition's), or a
        handle to the task computing them; the flag pass may be submitted before they are in
        (:func:`wait_for_cutoffs`).
    clock : Stopwatch
        Seconds per stage so far (``cutoffs`` is timed by :func:`wait_for_cutoffs`).
    most_issues : int
        The most rows the flag pass can flag (:func:`most_issues`).
    """

    parts: list
    facts: list
    family_keys: list
    stats: plan.NoiseStatistics
    request: passes.FlagRequest
    family_cutoffs: list
    clock: "Stopwatch"
    most_issues: int

    @property
    def timings(self) -> dict:
        """Seconds per stage."""
        return self.clock.timings


class Stopwatch:
    """Collects seconds per named stage and reports each to an optional callback."""

    def __init__(self, report=None):
        self.timings: dict = {}
        self.report = report
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self._last, 6)
        self._last = now
        if self.report is not None:
            self.report(stage, self.timings[stage])


def analyse(runner, sources, num_classes: int, dtype, options: ScanOptions,
            report=None, cache: bool | int = True, cache_keys: bool = True) -> Analysis:
    """Run every pass up to the flag pass.

    Parameters
    ----------
    runner : InProcessRunner or DaskRunner
    sources : list
        Partition sources in global row order (objects with ``load()``).
    num_classes : int
    dtype : numpy.dtype
        Dtype of pred_probs.
    options : ScanOptions
    report : callable(stage, seconds), optional
        Called after each stage (progress).
    cache : bool or int
        Keep decoded partitions in worker memory between passes: all (True), none (False), or
        this many, the first ones; every pass re-reads the others (memory bounded by the
        partitions in flight).
    cache_keys : bool
        For the cached partitions, also keep their selection key images (``(K - 1)`` per row
        for the noise-rate filters) between the cutoff rounds; otherwise each round recomputes
        them from the cached partition (GPU workers: a few kernels, and no device memory held).

    Returns
    -------
    Analysis
    """
    options.check_classes(num_classes)
    clock = Stopwatch(report)
    num_cached = len(sources) if cache is True else int(cache)   # False: 0
    # submitted up to the confident joint at once: the driver needs nothing before it (a bad
    # input makes the layout an InputFailure, which every later pass returns as it is), so no
    # round trip between the passes; it waits for each result only to time the stages
    parts = [*runner.map("read", passes.prepare, sources[:num_cached]), *sources[num_cached:]]
    layout = runner.submit("counts-layout", passes.class_layout, num_classes,
                           *runner.map("counts", passes.label_counts, parts))
    pieces = runner.map("thresholds", passes.partition_threshold_pieces, parts, list(range(len(sources))),
                        layout=layout)
    # the pieces (up to 127 raw values per cut leaf, thousands of small arrays at K=1000) are
    # folded where they were merged: only the K thresholds travel to the client
    thresholds = runner.reduce("thresholds-merge", passes.merge_threshold_pieces, pieces,
                               finish=plan.layout_thresholds, finish_args=(layout, dtype))
    facts = runner.map("joint", passes.row_facts, parts, thresholds=thresholds,
                       count_outranked=options.filter_by in NOISE_RATE_FILTERS)
    summaries = runner.map("joint-summary", passes.joint_summary, facts)
    filter_scores, score_probe = [None] * len(sources), None
    if options.filter_by in LOW_SCORE_FILTERS:
        filter_scores = runner.map("scores", passes.scores, parts, method=options.filter_by[4:],
                                   adjust=False, thresholds=None)
        score_probe = runner.submit("score-dtype", _dtype_of, filter_scores[0]) if len(sources) else np.zeros(0, dtype)
    # up to WORKER_PLAN_MAX_CLASSES, the merge of the joint counts plans the selections itself
    # (statistics, task families, each family's first refine step) and the first cutoff round,
    # submitted below, runs from it; wider plans (six K x K matrices) are made on the driver
    on_worker = num_classes <= plan.WORKER_PLAN_MAX_CLASSES
    merged = runner.reduce("joint-merge", passes.merge_joint_summaries, summaries, **(
        {"finish": plan.selection_planning, "finish_args": (layout, thresholds, options, dtype, score_probe)}
        if on_worker else {}))
    layout = runner.gather(layout)
    if isinstance(layout, passes.InputFailure):
        runner.release(parts)
        raise layout.error
    # asked once the partitions are read: each cutoff round merges the histograms of a worker's
    # partitions there first
    part_places = runner.places(parts)
    clock.lap("read")
    kept_keys = num_cached if cache_keys else 0
    if on_worker:
        keys_per_family = [_family_keys(runner, parts, filter_scores, facts, kept_keys, planned_round.family_keys,
                                        planning=merged, family=family)
                           for family in range(plan.FAMILIES_PER_FILTER[options.filter_by])]
        first_rounds = [submit_round(runner, keys, part_places, planned_round.first_histogram,
                                     {"planning": merged, "family": family}, planned_round.merge_histograms,
                                     planned_round.first_choice, (merged, family))
                        for family, keys in enumerate(keys_per_family)]
    thresholds = runner.gather(thresholds)
    clock.lap("thresholds")
    if on_worker:
        planning = runner.gather(merged)
    else:
        planning = plan.selection_planning(runner.gather(merged), layout, thresholds, options, dtype,
                                           runner.gather(score_probe), plan_rounds=False)
        keys_per_family = [_family_keys(runner, parts, filter_scores, facts, kept_keys, selection.partition_keys,
                                        tasks=tasks) for tasks in planning.families]
        first_rounds = [None] * len(planning.families)
    stats, families = planning.stats, planning.families
    clock.lap("joint")
    family_cutoffs = [find_cutoffs(runner, keys, tasks, places=part_places, first_round=first_round)
                      for keys, tasks, first_round in zip(keys_per_family, families, first_rounds)]

    request = passes.FlagRequest(filter_by=options.filter_by, families=families, rank_by=options.rank_by,
                                 adjust_pred_probs=options.adjust_pred_probs, thresholds=thresholds)
    family_keys = [[keys[i] for keys in keys_per_family] for i in range(len(sources))]
    return Analysis(parts=parts, facts=facts, family_keys=family_keys, stats=stats, request=request,
                    family_cutoffs=family_cutoffs, clock=clock, most_issues=most_issues(families, layout.num_rows))


def _family_keys(runner, parts, filter_scores, facts, num_kept: int, keys_of, **family) -> list:
    """Per partition, the keys of one selection family: those of the first ``num_kept`` partitions
    computed once and kept (``keys_of(part, scores, facts, **family)``), the others' inputs to
    compute them from in each round."""
    return [*runner.map("keys", keys_of, parts[:num_kept], filter_scores[:num_kept], facts[:num_kept], **family),
            *zip(parts[num_kept:], filter_scores[num_kept:], facts[num_kept:])]


def most_issues(families: list, num_rows: int) -> int:
    """An upper bound of the rows the flag pass flags, known before it runs: every flagged row is
    selected by a task of the first selection family (:func:`labelscan.passes.flagged_rows`),
    and a task selects at most its count of its rows; all rows without families."""
    if not families:
        return num_rows
    first = families[0]
    return int(min(num_rows, np.minimum(first.counts, first.sizes).sum()))


def wait_for_cutoffs(runner, analysis: Analysis) -> None:
    """Wait until every family's cutoffs are computed, and time the ``cutoffs`` stage.

    A caller submits the flag pass first (its tasks wait for the cutoffs on the workers), then
    calls this: the cutoffs never travel to the driver."""
    runner.wait(analysis.family_cutoffs)
    analysis.clock.lap("cutoffs")


def _dtype_of(values: np.ndarray) -> np.ndarray:
    """An empty array of the dtype of ``values`` (tells the driver a score dtype cheaply)."""
    return np.zeros(0, dtype=values.dtype)


def find_cutoffs(runner, keys, tasks: selection.SelectionTasks, places=None, first_round=None):
    """Exact per-partition cutoffs of one selection family (refine rounds, then resolve): its
    :class:`~labelscan.selection.Cutoffs`, or a handle to the task finishing them.

    Parameters
    ----------
    keys : list
        Per partition: cached key images, or ``(part, scores, facts)`` to compute them from.
    places : list, optional
        Per partition, where its keys are computed (:meth:`~labelscan.runner.DaskRunner.places`):
        a round's histograms are summed on each worker before they travel.
    first_round : tuple, optional
        The handles (:func:`submit_round`) of the family's first round, already submitted
        (:mod:`labelscan.planned_round`): the rounds go on from its advanced planner.
    """
    planner = selection.SelectionPlanner(tasks) if first_round is None else None
    while first_round is not None or (step := planner.next_refine()) is not None:
        advanced, pieces, finished = first_round or submit_round(
            runner, keys, places, selection.histogram,
            {"tasks": tasks, "intervals": planner.intervals, "active": step[0], "bits": step[1]},
            sparse_histogram.merge, selection.advance, (planner, *step))
        first_round = None
        planner = runner.gather(advanced)
        if planner.resolve_due:
            return finished
        runner.release([*pieces, finished])
    collect, split_ties = planner.resolve_sets()
    if not len(collect) and not len(split_ties):
        return planner.finish(collect, split_ties, [selection.empty_piece()] * len(keys))
    pieces = runner.map("cutoffs-resolve", selection.resolve_pieces, keys, tasks=tasks, intervals=planner.intervals,
                        collect=collect, ties=split_ties)
    # finished next to the pieces: the candidates stay on the workers, and the flag pass can be
    # submitted at once
    return runner.submit("cutoffs-finish", planner.finish, collect, split_ties, pieces)


def submit_round(runner, keys, places, histogram, histogram_arguments: dict, merge, choose, choose_arguments: tuple):
    """Submit one refine round of a family and the resolve that follows it when it is the last.

    ``histogram(keys, **histogram_arguments)`` per partition; the root merge of the histograms
    (``merge``) chooses the bins, ``choose(merged, *choose_arguments)`` returning the advanced
    planner; the resolve is submitted with the choice: it runs when the advanced planner
    collects next (the usual last round) while the choice travels to the driver.

    Returns
    -------
    (advanced, pieces, finished)
        Handles of the advanced planner, of each partition's resolve piece (None unless due)
        and of the finished :class:`~labelscan.selection.Cutoffs` (None unless due).
    """
    histograms = runner.map("cutoffs", histogram, keys, **histogram_arguments)
    advanced = runner.reduce("cutoffs-merge", merge, histograms, places=places, finish=choose,
                             finish_args=choose_arguments)
    pieces = runner.map("cutoffs-resolve", selection.resolve_if_due, keys, planner=advanced)
    finished = runner.submit("cutoffs-finish", selection.finish_if_due, advanced, *pieces)
    return advanced, pieces, finished
