"""Dataset-scale runs: one worker function over many tasks, in this process, in local worker
processes (`workers=N`) or on a Ray cluster (`ray=ADDRESS`), resumable, errors isolated.

`run_batch` (runner.py) is the reusable machinery; `segment.py` (`segparts batch`) and the
benchmark evaluations (`segparts eval princeton|partobjaverse`) are built on it. See docs/batch.md.
"""

from .runner import ERROR, OK, SKIPPED, BatchReport, RecordStore, Task, run_batch

__all__ = ["ERROR", "OK", "SKIPPED", "BatchReport", "RecordStore", "Task", "run_batch"]
