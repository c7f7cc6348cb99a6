"""Checkpoints: saving, loading and verifying them, and reading their metadata without torch.

    meta       what a checkpoint holds (CheckpointInfo), read from its sidecar or its pickle;
               the --list_checkpoints listing
    sidecar    X.pth.meta.json: read, written, checked; damage marks; verifying a file
    torchfile  the torch.save container (zip or legacy): where the pickle is, is the file whole
    pickle_vm  the bounded pickle interpreter and its allowlist (and the sandboxed C path)
    errors     what the reader raises; one-line reasons
    fsutil     checkpoint file names, the one atomic writer, temp-file cleanup, deletion
    pool       the reader in disposable, memory-capped processes, for many files at once
    disk       free-space estimates for a run's checkpoints
    store      crash-safe saving and weights_only loading (imports torch)

The reader (meta, sidecar, torchfile, pickle_vm, errors), fsutil and pool never import torch:
the reader processes import ``pool`` with ``python -I -S``, and listing, scanning and deleting
checkpoints must not pay for torch.
"""
