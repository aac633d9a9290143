"""The case engine: per-case work over a folder, resumable, with one report (see :mod:`.run`).

* :mod:`.pool` — :func:`map_cases`: serial, local process pool (workers die with their parent,
  stop promptly on Ctrl-C/SIGTERM) or Dask distributed.
* :mod:`.cache` — content digests of input files and model weights; Parquet parts per case.
* :mod:`.run` — :class:`CaseTask`, :class:`CaseResult`, :class:`RunReport`, :func:`run_cases`.
"""

from segqc.execution.cache import CaseStore, case_key, directory_digest, file_digest, settings_digest
from segqc.execution.pool import map_cases, pool_start_method, progress_bar
from segqc.execution.run import CaseResult, CaseSkipped, CaseTask, RunReport, run_cases

__all__ = [
    "CaseResult",
    "CaseSkipped",
    "CaseStore",
    "CaseTask",
    "RunReport",
    "case_key",
    "directory_digest",
    "file_digest",
    "map_cases",
    "pool_start_method",
    "progress_bar",
    "run_cases",
    "settings_digest",
]
