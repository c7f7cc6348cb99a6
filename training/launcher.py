"""Where a run executes: the rules of the launch options (``--launcher``, ``--slurm_partition``,
``--nodes``, ``--gpus_per_node``, ``--timeout_min``, ``--slurm_extra``; the option table is
``training.config``).

Called by ``training.config.validate_options``, so the CLI, the jobs API and the Launch form refuse
the same values with the same line. Turning the options into a submission is
``training.jobs.slurm``. Standard library only: the CLI checks them before importing torch.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

SLURM = "slurm"
# The Slurm options, and their values when no Slurm job is asked for.
SLURM_OPTION_DEFAULTS: dict[str, Any] = {"slurm_partition": None, "nodes": 1, "gpus_per_node": 0,
                                         "timeout_min": 1440, "slurm_extra": None}
# Partition names: Slurm's own characters (a comma lists several partitions).
PARTITION = re.compile(r"^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$")
EXTRA_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
# sbatch options the submission sets itself: the job's log, its signal and requeueing, its size
# and time (their own options), the name. Another value for them would break saving or resuming.
RESERVED_SBATCH = frozenset({
    "output", "error", "open-mode", "signal", "requeue", "no-requeue", "time", "t", "nodes", "N",
    "partition", "p", "gpus-per-node", "job-name", "J", "array", "a", "wrap", "chdir", "D",
    "ntasks-per-node", "ntasks", "n", "export",
})


def check_launch_options(values: Mapping[str, Any]) -> None:
    """Raise ValueError (one line naming the option) for launch options no submission could use:
    a Slurm option without ``--launcher slurm``, a partition name Slurm would not accept, or an
    ``--slurm_extra`` that is not a list of ``--name[=value]`` sbatch options."""
    launcher = values.get("launcher") or "local"
    if launcher != SLURM:
        for name, default in SLURM_OPTION_DEFAULTS.items():
            if values.get(name) not in (None, default):
                raise ValueError(f"--{name} goes with --launcher slurm")
        return
    if values.get("list_checkpoints") or values.get("eval") or values.get("eval_scores"):
        raise ValueError("--launcher slurm submits training runs; list or evaluate without it")
    partition = values.get("slurm_partition")
    if partition and not PARTITION.match(str(partition)):
        raise ValueError(f"--slurm_partition {partition!r} is not a partition name (letters, digits, _ . + -)")
    parse_slurm_extra(values.get("slurm_extra"))


def parse_slurm_extra(text: str | None) -> dict[str, Any]:
    """``'--account=abc --qos high --exclusive'`` as submitit's additional sbatch parameters
    (``{"account": "abc", "qos": "high", "exclusive": True}``). Raises ValueError naming the
    first token that is no sbatch option, or an option the submission sets itself."""
    if not text or not str(text).strip():
        return {}
    try:
        tokens = shlex.split(str(text))
    except ValueError as exc:
        raise ValueError(f"--slurm_extra {text!r}: {exc}") from None
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ValueError(f"--slurm_extra: {token!r} is not an sbatch option (write --name=value)")
        key, eq, value = token[2:].partition("=")
        if not EXTRA_KEY.match(key):
            raise ValueError(f"--slurm_extra: {token!r} is not an sbatch option name")
        if key in RESERVED_SBATCH:
            raise ValueError(f"--slurm_extra: --{key} is set by the submission itself (use the launch options)")
        if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value, eq = tokens[i + 1], "="
            i += 1
        if any(ord(c) < 32 for c in value):
            raise ValueError(f"--slurm_extra: --{key} must not contain a control character")
        out[key.replace("-", "_")] = value if eq else True
        i += 1
    return out


def launch_values(args: Mapping[str, Any]) -> dict[str, Any]:
    """The Slurm options of ``args``, defaults filled in."""
    return {name: args.get(name, default) if args.get(name) is not None else default
            for name, default in SLURM_OPTION_DEFAULTS.items()}
