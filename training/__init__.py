"""Audio anti-spoofing training with exact, crash-safe checkpoint management.

Importing this package must stay cheap: ``--list_checkpoints`` and the dashboard's catalog
never import torch. Modules that need torch (trainer, models, data, store) import it themselves.
"""

__version__ = "0.1.0"
