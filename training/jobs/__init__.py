"""Background runs: a SQLite registry of jobs under the models root, and the supervisor that
watches each trainer process and records how it ended.

    registry    the SQLite registry: the Job record, reading jobs and their logs
    control     launch and stop jobs
    evaluate    evaluation jobs (``--eval`` of one checkpoint, kind ``eval``)
    supervisor  the supervisor process (``python -m training.jobs supervise DB ID``)

The command line of a run (modes, flags, argv) is ``training.runs``: the CLI and the Launch form
share it; it is re-exported here as part of the jobs API.
"""

from training.jobs.control import launch, stop
from training.jobs.evaluate import launch_eval
from training.jobs.registry import (JOBS_DIRNAME, Job, JobConflict, JobNotFound, db_path, get_job, jobs_dir,
                                    list_jobs, refresh, tail_log)
from training.runs import MODES, NEEDS_CHECKPOINT, RESERVED_OPTIONS, build_argv, command_line

__all__ = ["JOBS_DIRNAME", "MODES", "NEEDS_CHECKPOINT", "RESERVED_OPTIONS", "Job", "JobConflict", "JobNotFound",
           "build_argv", "command_line", "db_path", "get_job", "jobs_dir", "launch", "launch_eval", "list_jobs", "refresh", "stop",
           "tail_log"]
