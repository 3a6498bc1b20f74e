"""Bistoury's benchmarks: ``make bench`` (``python -m bench``) runs them all.

Each suite writes ``bench/results/<suite>.json`` (figures, baselines, aims, machine) and
``docs/benchmarks.md`` is regenerated from every results file, so the numbers people read
are always the ones the last run measured.
"""
