"""Background runs: a SQLite registry of jobs under the models root, and the supervisor that
watches each trainer process and records how it ended.

    registry   launch, stop, list jobs; the supervisor process (``python -m training.jobs.registry``)
"""
