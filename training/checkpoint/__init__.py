"""Checkpoints: saving, loading and verifying them, and reading their metadata without torch.

    reader   metadata and sidecars, read without torch and without running pickled code
    pool     the reader in disposable, memory-capped processes, for many files at once
    store    crash-safe saving and weights_only loading (imports torch)
"""
