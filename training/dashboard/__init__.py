"""What the dashboard's pages show, decided here so that ``pages/`` only renders.

    catalog       experiments and checkpoints under a models root, as DataFrames (cached scans)
    views         the rows, columns and actions of the read pages
    plots         curve figures (plotly)
    launch_form   the Launch page's form: fields, defaults, validation, the plan it launches
    job_status    the Jobs page's table and progress
    settings      the models root the dashboard reads
    access        who may act: the start-up token and the own-origin rule
"""
