"""Baton's jobs: entrypoints for `ray job submit`, the `baton` CLI, the run config and the run store.

All IO and orchestration live here; ``inference`` and ``calibration`` work on batches, frames and arrays.
"""
