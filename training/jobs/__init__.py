"""Background runs: a SQLite registry of jobs under the models root, and the supervisor that
watches each trainer process and records how it ended.

    registry   launch, stop, list jobs; the supervisor process (``python -m training.jobs.registry``)
"""

from training.jobs.registry import (JOBS_DIRNAME, MODES, NEEDS_CHECKPOINT, RESERVED_OPTIONS, Job, JobConflict,
                                    JobNotFound, build_argv, command_line, db_path, get_job, jobs_dir, launch,
                                    list_jobs, refresh, stop, tail_log)

__all__ = ["JOBS_DIRNAME", "MODES", "NEEDS_CHECKPOINT", "RESERVED_OPTIONS", "Job", "JobConflict", "JobNotFound",
           "build_argv", "command_line", "db_path", "get_job", "jobs_dir", "launch", "list_jobs", "refresh", "stop",
           "tail_log"]
