"""Model registry: ``model_type`` -> model, built from the training-args dict.

Adding a model type is one ``MODEL_REGISTRY`` entry (and its name in ``config.MODEL_TYPES`` so the
CLI offers it). A ``ModelEntry`` reads the model's hyperparameters straight from its constructor
signature: each keyword argument takes ``args[name]``, else the CLI default
(``training.config.DEFAULTS``, for checkpoints written before the option existed), else the
constructor default. ``model_args`` returns exactly those values, so a checkpoint can store them
(nanoGPT-style) and ``build_model(model_args(args))`` rebuilds the same architecture.

Architecture versions: g3_heatmap changed network once (``head_version`` 1: the research model's
head; 0: the first head). Args without ``head_version`` come from checkpoints written before the
version was recorded, so they rebuild head 0; a run records the version it trains in its args
(``with_head_version``), which every checkpoint stores.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from training.config import DEFAULTS, coerce_to
from training.labels import BONAFIDE, SPOOF
from training.models.base import ModelOutput
from training.models.frontends import FRONTENDS
from training.models.g3_heatmap import HEAD_VERSION, G3Heatmap
from training.models.g3_heatmap_v0 import G3HeatmapV0
from training.models.lcnn import LCNN

__all__ = ["BONAFIDE", "FRONTENDS", "HEAD_VERSION", "LEGACY_HEAD_VERSION", "MODEL_REGISTRY", "SPOOF",
           "G3Heatmap", "G3HeatmapV0", "LCNN", "ModelEntry", "ModelOutput", "VersionedEntry",
           "build_model", "check_model_args", "head_version", "model_args", "with_head_version"]

LEGACY_HEAD_VERSION = 0  # what args without a recorded ``head_version`` were trained with
CURRENT_HEAD_KEY = "head.temporal_attn."  # a weight name only the current head has


def _typed(name: str, value: Any, default: Any) -> Any:
    """``value`` as the constructor default's type (args may come from JSON, a form, or numpy),
    by the option table's coercion rule (``training.config.coerce_to``)."""
    if default is None or value is None or type(value) is type(default):
        return value
    try:
        return coerce_to(type(default), value)
    except (TypeError, ValueError):
        kind = {bool: "a bool", int: "an integer", float: "a number"}.get(type(default), type(default).__name__)
        raise ValueError(f"{name} must be {kind}, got {value!r}") from None


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry: ``entry(args)`` builds ``cls`` from the args its constructor names."""

    cls: type[nn.Module]

    def kwargs(self, args: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, param in inspect.signature(self.cls.__init__).parameters.items():
            if name == "self" or param.default is inspect.Parameter.empty:
                continue
            value = args[name] if name in args else DEFAULTS.get(name, param.default)
            out[name] = _typed(name, value, param.default)
        return out

    def __call__(self, args: Mapping[str, Any]) -> nn.Module:
        return self.cls(**self.kwargs(args))


def head_version(args: Mapping[str, Any]) -> int:
    """The recorded architecture version; args that predate the record mean the first head."""
    value = args.get("head_version", LEGACY_HEAD_VERSION)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"head_version must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class VersionedEntry:
    """A model type whose network changed: ``versions[head_version]`` builds it."""

    versions: Mapping[int, ModelEntry]

    def entry(self, args: Mapping[str, Any]) -> ModelEntry:
        version = head_version(args)
        if version not in self.versions:
            known = ", ".join(str(v) for v in sorted(self.versions))
            raise ValueError(f"head_version {version} is not known to this code (known: {known}); "
                             "was the checkpoint written by a newer version?")
        return self.versions[version]

    def kwargs(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.entry(args).kwargs(args), "head_version": head_version(args)}

    def __call__(self, args: Mapping[str, Any]) -> nn.Module:
        return self.entry(args)(args)


MODEL_REGISTRY: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "g3_heatmap": VersionedEntry({LEGACY_HEAD_VERSION: ModelEntry(G3HeatmapV0), HEAD_VERSION: ModelEntry(G3Heatmap)}),
    "lcnn": ModelEntry(LCNN),
}


def _as_mapping(args: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    return args if isinstance(args, Mapping) else vars(args)  # argparse.Namespace too


def _model_type(args: Mapping[str, Any]) -> str:
    name = args.get("model_type", DEFAULTS["model_type"])
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model_type {name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    return name


def build_model(args: Mapping[str, Any] | Any) -> nn.Module:
    """The model that ``args`` (full training args, or a stored ``model_args`` dict) describes."""
    args = _as_mapping(args)
    return MODEL_REGISTRY[_model_type(args)](args)


def model_args(args: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``{"model_type": ..., **constructor hyperparameters}``: plain scalars, safe for checkpoints."""
    args = _as_mapping(args)
    name = _model_type(args)
    entry = MODEL_REGISTRY[name]
    kwargs = entry.kwargs(args) if isinstance(entry, (ModelEntry, VersionedEntry)) else {}
    return {"model_type": name, **kwargs}


def check_model_args(args: Mapping[str, Any]) -> None:
    """Model options that name files, checked before a run creates anything: a bad ``--ssl_path``
    raises ``SSLFolderError`` (a ``CheckpointError``: one line, exit 2)."""
    from training.models.ssl_frontend import SSLFolderError, check_ssl_folder

    if args.get("ssl_path"):
        check_ssl_folder(args["ssl_path"])
    elif args.get("freeze_ssl"):
        raise SSLFolderError("--freeze_ssl needs --ssl_path (the built-in front-end is trained from scratch)")


def with_head_version(args: Mapping[str, Any], source_args: Mapping[str, Any] | None,
                      source_state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``args`` plus the ``head_version`` a run trains: the source checkpoint's (its stored args,
    else, for a weights-only file, what its weight names show), or the current one for a run
    that starts from nothing. The trainer records the result in every checkpoint's args."""
    out = dict(args)
    if source_args is not None and "head_version" in source_args:
        out["head_version"] = head_version(source_args)
    elif source_state is not None:
        current = any(k.startswith(CURRENT_HEAD_KEY) for k in source_state)
        out["head_version"] = HEAD_VERSION if current else LEGACY_HEAD_VERSION
    elif source_args is not None:
        out["head_version"] = LEGACY_HEAD_VERSION
    else:
        out["head_version"] = HEAD_VERSION
    return out
