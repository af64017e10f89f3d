"""Benchmarks of labelscan: synthetic prediction sets (:mod:`benchmarks.datasets`) and the CPU
benchmark against the parquet read floor and cleanlab 2.9 (:mod:`benchmarks.cpu`)."""
