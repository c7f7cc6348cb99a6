"""What the dashboard's pages show, decided here so that ``pages/`` only renders.

    catalog       experiments and checkpoints under a models root, as DataFrames: what pages import
    scan            the folders and checkpoint files, and the per-file cache (catalog re-exports)
    history         per-epoch histories and the lineage of resumed runs (catalog re-exports)
    protection      which checkpoints must be kept; deleting the others (catalog re-exports)
    views         the rows, columns and actions of the read pages
    plots         curve figures (plotly)
    launch_form   the Launch page's form: fields, defaults, validation, the plan it launches
    job_status    the Jobs page's table and progress
    settings      the models root the dashboard reads
    access        who may act: the start-up token and the own-origin rule
"""
