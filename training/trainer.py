"""The training loop, and everything a checkpoint must hold for an exact resume.

One class, small ``_setup_*`` methods, one obvious path (after torchtune's recipes)::

    Trainer(args, plan).run()  ->  exit code

``args`` hold every option as its type (``training.config.typed_args``, applied by the CLI where
a checkpoint's stored values are merged in), so nothing here casts them.

``plan`` says how to begin (``StartPlan``: fresh, resume, or pretrained weights); the CLI
decides it. Exact resume means: training N epochs straight, or k epochs, being killed, and
resuming to N, gives bit-identical weights and metrics on the CPU. That needs, besides model and
optimizer: the python / numpy / torch (and CUDA) RNG states, the LR scheduler and AMP scaler,
the best EER and history, and the data order. The order of epoch ``e`` is a permutation drawn
from a generator seeded with (seed, e), so it needs no state beyond the position inside the
epoch, which a mid-epoch (SIGTERM) checkpoint stores together with the epoch's running sums.

Signals: the first SIGTERM or SIGINT asks the loop to stop; it finishes the current step, saves
``checkpoint_interrupt[_comment].pth`` (which resumes at the next step), and exits 143 / 130.
A second signal aborts at once; every checkpoint already on disk is intact either way.

A run touches only its own files. "This run's files" are the checkpoints at the top of its
experiment folder whose name carries its tag (``--comment``; the original script's untagged
names count as the folder's) and whose ``lineage`` is its own: how the run began (None: a
fresh start in this folder; else resumed from / pretrained on which parent checkpoint). A
resume continues the lineage of the file it resumes when that file is one of the folder's own,
and begins a new one otherwise (another experiment's file, an archived file). Only this run's
files are archived when in its way (moved to ``archive/<time>/``, never deleted), pruned by
``--keep_last``, removed as a stale interrupt checkpoint or published as the best file; files
with another tag are never touched. A fresh or pretrained start archives the folder's earlier
run of this tag. A resume into a folder that holds another run's checkpoints under this tag is
refused before anything is created or moved (``FolderHoldsAnotherRun``, exit 2): the two runs
would otherwise be mixed under one set of names.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.attention import ATTENTION_DIR, choose_utterances, collect_attention, is_render_epoch, write_attention
from training.checkpoint.reader import (CheckpointInfo, checkpoint_meta, file_sha256, list_checkpoint_files,
                                  read_checkpoint_info, read_checkpoint_object, read_sidecar, sidecar_path)
from training.data.datasets import build_datasets
from training.lock import ExperimentLock
from training.losses import build_criterion
from training.metrics import compute_eer
from training.models import build_model, check_model_args, with_head_version
from training.naming import (
    ARCHIVE_DIRNAME,
    LOG_NAME,
    best_checkpoint_name,
    carries_run_tag,
    epoch_checkpoint_name,
    experiment_dir,
    experiment_name,
    interrupt_checkpoint_name,
    parse_checkpoint_name,
)
from training.checkpoint.store import (
    CheckpointError,
    CheckpointWriter,
    LoadedCheckpoint,
    link_or_copy,
    remove_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
    snapshot_to_cpu,
    state_nbytes,
)

CHECKPOINT_FORMAT = 1
LOG_COLUMNS = ("epoch", "train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer",
               "lr", "epoch_seconds", "timestamp", "experiment")
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingStopped(Exception):
    """Raised after a signal once the resumable checkpoint is on disk."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class FolderHoldsAnotherRun(CheckpointError):
    """A resume would mix two runs under one experiment folder's names (exit 2, nothing touched)."""


@dataclass
class StartPlan:
    """How a run begins. ``mode``: fresh | resume | pretrained (nanoGPT's ``init_from``)."""

    mode: str
    source: LoadedCheckpoint | None = None
    note: str = ""  # why this plan was chosen, printed once


# --- which run a checkpoint belongs to -------------------------------------------------------------

def lineage_key(lineage: Any) -> tuple[tuple[str, str], ...] | None:
    """How a run began, in a form two checkpoints compare by: None for a fresh start in its own
    folder, else the lineage's fields with the parent checkpoint by file name (the same parent
    given by a relative or an absolute path is the same run; JSON sidecars and pickles agree)."""
    if not isinstance(lineage, dict):
        return None
    fields = dict(lineage)
    if fields.get("parent_checkpoint"):
        fields["parent_checkpoint"] = Path(str(fields["parent_checkpoint"])).name
    return tuple(sorted((str(k), str(v)) for k, v in fields.items()))


def describe_lineage(lineage: Any) -> str:
    """How a run began, for messages: 'started fresh there', 'resumed from EXP/FILE', ..."""
    if not isinstance(lineage, dict):
        return "started fresh there"
    if not lineage.get("parent_checkpoint"):
        return f"lineage {lineage}"
    parent = f"{lineage.get('parent_experiment')}/{Path(str(lineage['parent_checkpoint'])).name}"
    return f"started from the weights of {parent}" if lineage.get("mode") == "pretrained" else f"resumed from {parent}"


# --- RNG state ---------------------------------------------------------------------------------

def capture_rng_state() -> dict[str, Any]:
    """Every RNG the loop can touch, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of ``epoch``: a pure function of (seed, epoch), so resume needs no sampler state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers share the trainer's process group, so a Stop's SIGTERM reaches them
    too; only the trainer acts on it (it saves, then shuts the workers down itself)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def collate(batch: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    waves, labels, _ = zip(*batch)
    return torch.stack(waves), torch.tensor(labels, dtype=torch.long)


# --- per-epoch sums ------------------------------------------------------------------------------

@dataclass
class EpochSums:
    """Running sums of one pass; kept as tensors on the device (no per-step host sync)."""

    loss_sum: torch.Tensor | None = None
    count: int = 0
    scores: list[torch.Tensor] = field(default_factory=list)  # bonafide log-probabilities
    labels: list[torch.Tensor] = field(default_factory=list)
    correct: int = 0

    def add(self, loss: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        weighted = loss.detach().float() * n
        self.loss_sum = weighted if self.loss_sum is None else self.loss_sum + weighted
        self.count += n
        self.scores.append(log_probs[:, 1].detach().float())
        self.labels.append(labels.detach())

    def state(self) -> dict[str, Any]:
        """What a mid-epoch checkpoint stores to continue these sums exactly."""
        return {"loss_sum": None if self.loss_sum is None else self.loss_sum.cpu(), "count": self.count,
                "scores": torch.cat(self.scores).cpu() if self.scores else torch.zeros(0),
                "labels": torch.cat(self.labels).cpu() if self.labels else torch.zeros(0, dtype=torch.long)}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> "EpochSums":
        sums = cls(count=int(state["count"]))
        if state["loss_sum"] is not None:
            sums.loss_sum = state["loss_sum"].to(device)
        if state["scores"].numel():
            sums.scores = [state["scores"].to(device)]
            sums.labels = [state["labels"].to(device)]
        return sums

    def summary(self) -> dict[str, float]:
        scores = torch.cat(self.scores).cpu().numpy()
        labels = torch.cat(self.labels).cpu().numpy()
        out = {"loss": float(self.loss_sum.item()) / max(self.count, 1)}
        bona, spoof = scores[labels == 1], scores[labels == 0]
        out["eer"] = 100.0 * compute_eer(bona, spoof)[0] if len(bona) and len(spoof) else float("nan")
        # Accuracy: argmax of the two log-probabilities is "bonafide score > spoof score";
        # with log-softmax that is log p(bonafide) > log(0.5).
        out["acc"] = 100.0 * float(((scores > np.log(0.5)) == (labels == 1)).mean())
        return out


# --- the trainer ---------------------------------------------------------------------------------

class Trainer:
    """Trains one experiment folder; ``run()`` returns the process exit code."""

    def __init__(self, args: dict[str, Any], plan: StartPlan, echo: Callable[[str], None] = print):
        check_model_args(args)  # a bad --ssl_path is reported before the lock or the folder exist
        self.args = args
        self.plan = plan
        self.echo = echo
        self.name = experiment_name(args)
        self.exp_dir = experiment_dir(args)
        self.comment = args.get("comment")
        self.epoch = 0                # completed epochs
        self.resume_step = 0          # batches already done of epoch self.epoch + 1
        self.resume_sums: dict[str, Any] | None = None
        self.best_val_eer = float("inf")
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.lineage: dict[str, Any] | None = self._start_lineage()
        self.protected: set[Path] = set()  # never pruned: the checkpoint this run resumed from
        self.writer = CheckpointWriter(background=True)
        self._stop_signal: int | None = None
        self._last_size = 0

    # -- which files are this run's -----------------------------------------------------------

    def _continues_own_file(self) -> bool:
        """Resuming one of this folder's own checkpoints (its name carries this run's tag)."""
        source = self.plan.source
        return (self.plan.mode == "resume" and source is not None and source.full is not None
                and source.path.parent.resolve() == self.exp_dir.resolve()
                and carries_run_tag(source.path.name, self.comment))

    def _start_lineage(self) -> dict[str, Any] | None:
        """The lineage this run's checkpoints record (see the module docstring)."""
        source = self.plan.source
        if source is None:
            return None
        if self.plan.mode != "resume" or source.full is None:
            return {"mode": "pretrained", "parent_experiment": source.path.parent.name,
                    "parent_checkpoint": str(source.path)}
        if self._continues_own_file():
            return source.full.get("lineage")
        return {"mode": "resume", "parent_experiment": source.path.parent.name,
                "parent_checkpoint": str(source.path), "parent_epoch": int(source.full["epoch"])}

    def _is_own(self, info: CheckpointInfo) -> bool:
        """A readable checkpoint of this run: its tag, its lineage (unreadable files are nobody's)."""
        return (carries_run_tag(info.path.name, self.comment) and info.kind == "full"
                and lineage_key(info.lineage) == lineage_key(self.lineage))

    def _other_runs_files(self) -> list[CheckpointInfo]:
        """Checkpoints under this run's names, in its folder, that another run wrote."""
        source = self.plan.source.path.resolve() if self.plan.source is not None else None
        others = []
        for path in list_checkpoint_files(self.exp_dir):
            if path.resolve() == source or not carries_run_tag(path.name, self.comment):
                continue
            info = read_checkpoint_info(path)
            if info.kind == "full" and lineage_key(info.lineage) != lineage_key(self.lineage):
                others.append(info)
        return others

    def _refuse_mixing_runs(self) -> None:
        """A resume into a folder holding another run under this run's names stops here, before
        anything is created or moved: continuing would archive, prune or relink that run's files."""
        if self.plan.mode != "resume":
            return  # a fresh or pretrained start archives the earlier run: nothing is mixed
        others = self._other_runs_files()
        if not others:
            return
        names = ", ".join(i.path.name for i in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise FolderHoldsAnotherRun(
            f"{self.exp_dir} holds another run ({names}: {describe_lineage(others[0].lineage)}); resuming "
            f"{self.plan.source.path} into it would mix the two runs. Resume with another --comment (a new "
            f"folder), continue that run with --auto_resume, or move its files out of the folder first")

    # -- setup ----------------------------------------------------------------------------------

    def _setup_device(self) -> None:
        wanted = self.args.get("device", "auto")
        use_cuda = wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.amp = bool(self.args.get("amp")) and self.device.type == "cuda"

    def _setup_determinism(self) -> None:
        # Exact resume is checked on the CPU; on CUDA some kernels have no deterministic
        # version, so there we only warn instead of failing.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        seed_everything(self.args["seed"])

    def _setup_data(self) -> None:
        self.train_set, self.val_set = build_datasets(self.args)
        # --visualize_attention: the same validation utterances at every rendered epoch.
        self.viz_indices = (choose_utterances(self.val_set.labels, self.args["viz_samples"], self.args["seed"])
                            if self.args.get("visualize_attention") else [])

    def _setup_model(self) -> None:
        # The architecture version comes from the checkpoint a run starts from (old ones rebuild
        # the old g3_heatmap head); it joins self.args, so every checkpoint records it.
        source = self.plan.source
        stored = source.full.get("args") if source is not None and source.full else None
        self.args = with_head_version(self.args, stored if isinstance(stored, dict) else None,
                                      source.model_state if source is not None else None)
        self.model = build_model(self.args).to(self.device)
        self.criterion = build_criterion(self.args)
        if self.plan.source is not None:
            self._load_weights(self.plan.source)

    def _load_weights(self, source: LoadedCheckpoint) -> None:
        from training.checkpoint.store import CheckpointError

        result = self.model.load_state_dict(source.model_state, strict=False)
        # A pretrained start may add auxiliary heads the source lacked (e.g. the contrastive
        # projection); anything else missing or unexpected means the file is another model.
        optional = ("projector",) if self.plan.mode == "pretrained" else ()
        missing = [k for k in result.missing_keys if not k.startswith(optional)] if optional else result.missing_keys
        if missing or result.unexpected_keys:
            detail = []
            if missing:
                detail.append(f"missing {len(missing)} weights (e.g. {missing[0]})")
            if result.unexpected_keys:
                detail.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
            raise CheckpointError(f"{source.path}: does not fit model {self.args['model_type']} "
                                  f"with these arguments: {', '.join(detail)}")

    def _setup_optimizer(self) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.args["lr"],
                                          weight_decay=self.args["weight_decay"])
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.args["num_epochs"])
                          if self.args.get("scheduler") == "cosine" else None)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def _restore(self) -> None:
        """Continue a full checkpoint: optimizer, schedule, counters, RNG, data position."""
        source = self.plan.source
        if self.plan.mode != "resume" or source is None or source.full is None:
            return
        ckpt = source.full
        self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        for group in self.optimizer.param_groups:  # the command line's lr / weight decay win
            group["lr"] = self.args["lr"]
            group["weight_decay"] = self.args["weight_decay"]
        if self.scheduler is not None and ckpt.get("scheduler_state_dict"):
            self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
            self.scheduler.T_max = self.args["num_epochs"]
        if self.scaler is not None and ckpt.get("scaler_state_dict"):
            self.scaler.load_state_dict(ckpt["scaler_state_dict"])
        self.epoch = int(ckpt["epoch"])
        self.best_epoch = ckpt.get("best_epoch")
        # A checkpoint saved before the first validation (a stop in epoch 1) has no best yet: None.
        best = ckpt.get("best_val_eer")
        self.best_val_eer = float(best) if best is not None else float("inf")
        self.history = [dict(row) for row in ckpt.get("history", [])]
        if ckpt.get("partial") is not None:
            self.resume_step = int(ckpt.get("step_in_epoch", 0))
            self.resume_sums = ckpt["partial"]
        if ckpt.get("rng_state") is not None:
            restore_rng_state(ckpt["rng_state"])
        if self._continues_own_file():
            self.protected.add(source.path.resolve())

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        target = self.args["num_epochs"]
        self._refuse_mixing_runs()
        with ExperimentLock(self.exp_dir):
            leftovers = remove_stale_temp_files(self.exp_dir)  # we hold the lock: no save is in flight
            if leftovers:
                self.echo(f"Removed {len(leftovers)} unfinished save(s) of an interrupted run: "
                          + ", ".join(p.name for p in leftovers))
            self._setup_device()
            self._setup_determinism()
            self._setup_data()
            self._setup_model()
            self._setup_optimizer()
            self._restore()
            if self.plan.note:
                self.echo(self.plan.note)
            if self.epoch >= target:
                self.echo(f"Checkpoint is at epoch {self.epoch} and --num_epochs is {target}: nothing left "
                          f"to train. Raise --num_epochs to train further.")
                self._restore_log_rows()  # the final epoch's save may have been interrupted
                self._republish_best()
                return 0
            self._prepare_folder()
            self._republish_best()
            self.echo(f"Training {self.name} on {self.device}: epochs {self.epoch + 1}-{target} "
                      f"({len(self.train_set)} train / {len(self.val_set)} val clips) -> {self.exp_dir}")
            try:
                with self._signals_handled():
                    self._train(target)
            except TrainingStopped as stop:
                self.echo(str(stop))
                return EXIT_SIGNAL[stop.signum]
            finally:
                self.writer.wait()
        best = f"{self.best_val_eer:.2f}% (epoch {self.best_epoch})" if self.best_epoch else "n/a"
        self.echo(f"Done: {target} epochs in {self.exp_dir}; best val EER {best}")
        return 0

    def _train(self, target: int) -> None:
        while self.epoch < target:
            epoch = self.epoch + 1
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train = self._train_epoch(epoch)
            self.val_set.set_epoch(epoch)  # --augment_dev: a new draw each epoch, as the original
            val = self._validate()
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch = epoch
            improved = val["eer"] < self.best_val_eer
            if improved:
                self.best_val_eer, self.best_epoch = val["eer"], epoch
            row = {"epoch": epoch, "train_loss": train["loss"], "train_eer": train["eer"],
                   "val_loss": val["loss"], "val_acc": val["acc"], "val_eer": val["eer"],
                   "best_val_eer": self.best_val_eer, "lr": lr,
                   "epoch_seconds": round(time.perf_counter() - started, 3), "timestamp": time.time(),
                   "experiment": self.name}
            self.history.append(row)
            # Before the checkpoint: a kill in between retrains and renders this epoch again.
            self._render_attention(epoch, target)
            self.save_checkpoint(row, improved)
            self.echo(f"Epoch {epoch}/{target}  train loss {train['loss']:.4f} EER {train['eer']:.2f}%  "
                      f"val loss {val['loss']:.4f} acc {val['acc']:.2f}% EER {val['eer']:.2f}%  "
                      f"best {self.best_val_eer:.2f}% (epoch {self.best_epoch})  [{row['epoch_seconds']:.1f}s]"
                      + ("  * new best" if improved else ""))
            if self._stop_signal is not None:
                self.writer.wait()
                raise TrainingStopped(self._stop_signal, self._stopped_message(epoch, 0, self._epoch_path(epoch)))

    def _render_attention(self, epoch: int, target: int) -> None:
        """``attention/epoch_N/`` on the scheduled epochs (training.attention); draws no RNG."""
        if not self.viz_indices or not is_render_epoch(epoch, target, self.args["viz_frequency"]):
            return
        arrays = collect_attention(self.model, self.val_set, self.viz_indices, self.device,
                                   self.args["batch_size"])
        folder = write_attention(self.exp_dir / ATTENTION_DIR, f"epoch_{epoch}", arrays)
        self.echo(f"Attention maps of epoch {epoch}: {folder}")

    def _loader(self, dataset: Dataset, batches: list[list[int]]) -> DataLoader:
        # A private generator: creating an iterator must not draw from the global torch RNG,
        # or a resumed epoch would see a different dropout stream than an uninterrupted one.
        workers = self.args.get("num_workers") or 0
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                          generator=torch.Generator(), pin_memory=self.device.type == "cuda",
                          worker_init_fn=_ignore_stop_signals if workers else None)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        batches = epoch_batches(len(self.train_set), self.args["batch_size"], self.args["seed"], epoch)
        start = self.resume_step
        sums = EpochSums.from_state(self.resume_sums, self.device) if self.resume_sums else EpochSums()
        self.resume_step, self.resume_sums = 0, None
        self.train_set.set_epoch(epoch)  # RawBoost draws per (seed, epoch, clip); before the workers start
        bar = tqdm(self._loader(self.train_set, batches[start:]), total=len(batches), initial=start,
                   desc=f"Epoch {epoch}", leave=False, dynamic_ncols=True, file=sys.stderr)
        # The first step whose loss was not finite, kept on the device (-1: none yet), so that
        # checking it costs no per-step host sync; read before any save and at the epoch's end.
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        for step, (x, y) in enumerate(bar, start=start + 1):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss, log_probs = self._step(x, y)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            sums.add(loss, log_probs, y)
            if self._stop_signal is not None and step < len(batches):
                bar.close()
                self._stop_if_not_finite(epoch, first_bad)  # never save a diverged state
                self._save_interrupt(epoch, step, sums)
        bar.close()
        self._stop_if_not_finite(epoch, first_bad)
        return sums.summary()

    def _stop_if_not_finite(self, epoch: int, first_bad: torch.Tensor) -> None:
        """Stop the run (FloatingPointError, one line) once the loss or the weights are NaN/inf:
        this epoch is not saved, every checkpoint saved before stays as it was."""
        step = int(first_bad.item())
        if step < 0 and all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return
        what = f"the training loss became NaN or infinite at epoch {epoch}, step {step}" if step >= 0 else \
            f"the weights became NaN or infinite in epoch {epoch}"
        self.writer.wait()  # the previous epoch's checkpoint is completed, not lost
        saved = f"checkpoints up to epoch {self.epoch} are intact" if self.epoch else "no checkpoint was saved"
        raise FloatingPointError(f"{what} (lr {self.args['lr']}): stopped without saving it; {saved}. "
                                 "Lower --lr or resume from an earlier checkpoint")

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            output = self.model(x)
            loss, _ = self.criterion(output, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss, output.log_probs

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        batch_size = self.args["batch_size"]
        order = list(range(len(self.val_set)))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        sums = EpochSums()
        for x, y in self._loader(self.val_set, batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                output = self.model(x)
                loss, _ = self.criterion(output, y)
            sums.add(loss, output.log_probs, y)
        return sums.summary()

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint(self, step_in_epoch: int = 0, partial: dict[str, Any] | None = None) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {
            "format_version": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step_in_epoch": step_in_epoch,
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict() if self.scheduler else None,
            "scaler_state_dict": self.scaler.state_dict() if self.scaler else None,
            **{k: last.get(k) for k in ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer")},
            "best_val_eer": self.best_val_eer if self.best_epoch else None,
            "best_epoch": self.best_epoch,
            "args": dict(self.args),
            "experiment": self.name,
            "history": [dict(row) for row in self.history],
            "lineage": self.lineage,
            "rng_state": capture_rng_state(),
            "partial": partial,
            "saved_at": time.time(),
        }

    def _epoch_path(self, epoch: int) -> Path:
        return self.exp_dir / epoch_checkpoint_name(epoch, self.comment)

    def save_checkpoint(self, row: dict[str, Any], improved: bool) -> None:
        """Snapshot now (the loop is blocked only for this copy); write in the background."""
        state = self.writer.snapshot(self._checkpoint())  # waits for the previous save (its buffers)
        path = self._epoch_path(self.epoch)
        best = self.exp_dir / best_checkpoint_name(self.comment)
        expected = self._last_size or state_nbytes(state)

        def write() -> None:
            self._last_size, digest = save_checkpoint(state, path, expected_size=expected)
            if improved:
                link_or_copy(path, best, digest, checkpoint_meta(state))
            self._append_log(row)
            self._remove_stale_interrupt()
            self._prune()

        self.writer.submit(write)

    def _save_interrupt(self, epoch: int, step: int, sums: EpochSums) -> None:
        self.writer.wait()
        path = self.exp_dir / interrupt_checkpoint_name(self.comment)
        state = snapshot_to_cpu(self._checkpoint(step, sums.state()))
        # Checked like every epoch save: refused before a byte is written when it cannot fit.
        save_checkpoint(state, path, expected_size=self._last_size or state_nbytes(state))
        raise TrainingStopped(self._stop_signal or signal.SIGTERM, self._stopped_message(epoch, step, path))

    def _stopped_message(self, epoch: int, step: int, path: Path) -> str:
        name = signal.Signals(self._stop_signal or signal.SIGTERM).name
        where = f"in epoch {epoch} after step {step}" if step else f"after epoch {epoch}"
        return (f"Stopped by {name} {where}: saved {path}. Continue with --auto_resume "
                f"(or --resume --model_path {path}).")

    def _remove_stale_interrupt(self) -> None:
        """This run's interrupt checkpoint, once an epoch checkpoint has superseded it."""
        stale = self.exp_dir / interrupt_checkpoint_name(self.comment)
        if stale.exists():
            info = read_checkpoint_info(stale)
            if self._is_own(info) and info.epoch is not None and info.epoch < self.epoch:
                remove_checkpoint(stale)

    def _republish_best(self) -> None:
        """On resume, make the best file hold the best epoch the checkpoint records.

        A kill between an improving epoch's checkpoint and the best link that follows it leaves
        the best file one improvement behind (or missing), and no later epoch may improve to
        fix it. Only a missing or older best file of this run is replaced, never a corrupt one or
        another run's, and only by this run's own epoch file.
        """
        if self.plan.mode != "resume" or not self.best_epoch:
            return
        best = self.exp_dir / best_checkpoint_name(self.comment)
        if best.exists():
            current = read_checkpoint_info(best)
            if not self._is_own(current) or current.epoch is None or current.epoch >= self.best_epoch:
                return
        source = read_checkpoint_info(self._epoch_path(self.best_epoch))
        if not self._is_own(source) or source.epoch != self.best_epoch:
            return  # pruned, unreadable or not this run's: nothing to publish
        # Killed before its sidecar too: hash and describe the file the slow way (rare).
        meta = read_sidecar(source.path) if source.complete else checkpoint_meta(read_checkpoint_object(source.path))
        link_or_copy(source.path, best, source.sha256 or file_sha256(source.path), meta)
        self.echo(f"{best.name} was behind the checkpoint resumed from (an interrupted save): "
                  f"republished it from {source.path.name}")

    def _prune(self) -> None:
        """``--keep_last K``: after a save is complete, drop this run's older epoch checkpoints,
        never protected ones, never another run's (another tag or lineage) or an unreadable one."""
        keep = self.args.get("keep_last")
        if not keep:
            return
        epochs = sorted(((parse_checkpoint_name(p.name).epoch, p) for p in list_checkpoint_files(self.exp_dir)
                         if parse_checkpoint_name(p.name).role == "epoch" and self._is_own(read_checkpoint_info(p))),
                        key=lambda e: e[0])
        protected = set(self.protected)
        if epochs:
            protected.add(epochs[-1][1].resolve())  # the newest
        if self.best_epoch:
            protected.add(self._epoch_path(self.best_epoch).resolve())
        for _, path in epochs[:-int(keep)] if len(epochs) > int(keep) else []:
            if path.resolve() not in protected:
                remove_checkpoint(path)

    def _append_log(self, row: dict[str, Any]) -> None:
        log = self.exp_dir / LOG_NAME
        new = not log.exists()
        with open(log, "a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            if new:
                out.writeheader()
            out.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def _prepare_folder(self) -> None:
        """Move aside files this run would overwrite (never delete them); restore missing log rows.

        Only files under this run's names are looked at: files with another tag stay as they are.
        A fresh run archives the folder's earlier run. A resumed run archives checkpoints past
        its starting point: a branch it abandons, or corrupt files auto-resume skipped.
        """
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        own_names = [p for p in list_checkpoint_files(self.exp_dir) if carries_run_tag(p.name, self.comment)]
        if self.plan.mode != "resume":
            log = self.exp_dir / LOG_NAME
            attention = self.exp_dir / ATTENTION_DIR
            earlier = own_names + ([log] if log.exists() else []) + ([attention] if _has_entries(attention) else [])
            self._archive(earlier, "Fresh start: the folder had an earlier run")
            return
        here = (self.epoch, self.resume_step)
        target = self.args["num_epochs"]

        # Names this run will write: a file holding one is in the way whatever it says it holds
        # (e.g. a corrupt copy of an older epoch that auto-resume skipped). Judged per existing
        # file from its name: a set of every future name would cost memory per epoch to train.
        def writes(name: str) -> bool:
            epoch = parse_checkpoint_name(name).epoch
            return (epoch is not None and self.epoch < epoch <= target
                    and name == epoch_checkpoint_name(epoch, self.comment))

        ahead = []
        for path in own_names:
            if path.resolve() in self.protected:
                continue
            info = read_checkpoint_info(path)
            progress = (info.epoch, info.step_in_epoch) if info.epoch is not None else None
            named = parse_checkpoint_name(path.name)
            # Unreadable files are judged by their name: would this run write a file of that name?
            unreadable_in_the_way = progress is None and ((named.epoch or 0) > self.epoch or named.role in ("best", "interrupt"))
            if unreadable_in_the_way or (progress is not None and progress > here) or writes(path.name):
                ahead.append(path)
        ahead += self._attention_past(self.epoch, abandoned_branch=bool(ahead))
        self._archive(ahead, f"Resuming at epoch {self.epoch}: checkpoints past it would be overwritten")
        self._restore_log_rows()

    def _attention_past(self, epoch: int, abandoned_branch: bool) -> list[Path]:
        """``attention/epoch_K`` folders past the resume point that belong to an abandoned branch.
        The one of the next epoch alone, with no checkpoint ahead, is a render whose checkpoint a
        kill prevented: this run renders it again (the same maps), so it is not archived."""
        root = self.exp_dir / ATTENTION_DIR
        past = []
        for path in sorted(root.glob("epoch_*")) if root.is_dir() else []:
            number = path.name.removeprefix("epoch_")
            if number.isdigit() and int(number) > epoch and (abandoned_branch or int(number) > epoch + 1):
                past.append(path)
        return past

    def _restore_log_rows(self) -> None:
        """A kill between a checkpoint and its log row leaves the row missing: add it back."""
        logged = set()
        log = self.exp_dir / LOG_NAME
        if log.exists():
            with open(log, newline="") as f:
                logged = {row.get("epoch") for row in csv.DictReader(f)}
        for row in self.history:
            if row.get("experiment", self.name) == self.name and str(row["epoch"]) not in logged:
                self._append_log(row)

    def _archive(self, files: list[Path], why: str) -> None:
        if not files:
            return
        archive = self._new_archive_folder()
        for path in files:
            sidecar = sidecar_path(path)
            if sidecar.exists():
                shutil.move(str(sidecar), archive / sidecar.name)
            target = archive / path.relative_to(self.exp_dir)  # attention/epoch_N keeps its parent
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
        names = ", ".join(p.name for p in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        self.echo(f"{why}; moved {names} to {archive} (nothing deleted)")

    def _new_archive_folder(self) -> Path:
        """``archive/<time>/``, never one that exists: two archivings in one second must not
        move a file onto a same-named one archived before."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (self.exp_dir / ARCHIVE_DIRNAME).mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            folder = self.exp_dir / ARCHIVE_DIRNAME / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise CheckpointError(f"{self.exp_dir / ARCHIVE_DIRNAME}: no free folder name for {stamp}")

    # -- signals --------------------------------------------------------------------------------

    def _signals_handled(self) -> "_SignalScope":
        return _SignalScope(self)


def _has_entries(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


class _SignalScope:
    """First SIGTERM/SIGINT: stop after the current step and save. Second: abort now."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer._stop_signal is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborting without saving")
        self.trainer._stop_signal = signum
        print(f"\n{signal.Signals(signum).name} received: finishing the current step and saving "
              "(send again to abort without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> "_SignalScope":
        for signum in EXIT_SIGNAL:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

