"""The training loop, and everything a checkpoint must hold for an exact resume.

One class, small ``_setup_*`` methods, one obvious path (after torchtune's recipes)::

    Trainer(args, plan).run()  ->  exit code

``args`` hold every option as its type (``training.config.typed_args``, applied by the CLI where
a checkpoint's stored values are merged in), so nothing here casts them.

``plan`` says how to begin (``StartPlan``: fresh, resume, or pretrained weights); the CLI
decides it. Exact resume means: training N epochs straight, or k epochs, being killed, and
resuming to N, gives bit-identical weights and metrics on the CPU. That needs, besides model and
optimizer: the python / numpy / torch (and CUDA) RNG states, the LR scheduler and AMP scaler,
the best EER and the last history row (the rest is in the log: ``training.run_history``), and the data order (``training.resume_state``: RNG capture, the
order of each epoch, the running sums a mid-epoch (SIGTERM) checkpoint stores).

Signals: the first SIGTERM or SIGINT asks the loop to stop; it finishes the current step, saves
``checkpoint_interrupt[_comment].pth`` (which resumes at the next step), and exits 143 / 130.
A second signal aborts at once; every checkpoint already on disk is intact either way.

Under torchrun (``training.distributed``, ``training.shards``) every rank runs this class: rank 0
alone takes the lock, prepares the folder and writes; each rank trains on its share of the same
global batches through DDP (``self.train_model``; ``self.model`` is the plain module that
checkpoints, validation and attention use); a stop signal on any rank is agreed at every step.

A run touches only its own files (``training.run_folder``: which files are its own, archive,
pruning, the best file, the log). "This run's files" are the checkpoints at the top of its
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

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training import distributed, shards

from training.attention import ATTENTION_DIR, choose_utterances, collect_attention, is_render_epoch, write_attention
from training.checkpoint.meta import checkpoint_meta, list_checkpoint_files, read_checkpoint_info
from training.checkpoint.store import (CheckpointError, CheckpointWriter, LoadedCheckpoint, link_or_copy, save_checkpoint, snapshot_to_cpu, state_nbytes)
from training.checkpoint.fsutil import remove_stale_temp_files
from training.data import build_datasets
from training.lock import ExperimentLock
from training.losses import build_criterion
from training.models import build_model, check_model_args, with_head_version
from training.naming import (LOG_NAME, best_checkpoint_name, carries_run_tag, epoch_checkpoint_name, experiment_dir,
                             experiment_name, interrupt_checkpoint_name, parse_checkpoint_name)
from training.labels import BONAFIDE
from training.resume_state import EpochSums, collate, epoch_batches, ignore_stop_signals, seed_everything
from training.run_folder import RunFolder, describe_lineage, has_entries
from training.run_history import history_fields, rows_to_restore
from training.step_log import StepLog, prepare_step_log

CHECKPOINT_FORMAT = 1
# SIGUSR2: Slurm's warning before a time limit or preemption (training.jobs.slurm): save, as on SIGTERM.
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR2: 140}


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


# --- the trainer ---------------------------------------------------------------------------------

class Trainer:
    """Trains one experiment folder; ``run()`` returns the process exit code."""

    def __init__(self, args: dict[str, Any], plan: StartPlan, echo: Callable[[str], None] = print):
        check_model_args(args)  # a bad --ssl_path is reported before the lock or the folder exist
        self.args = args
        self.plan = plan
        # Under torchrun (training.distributed) rank 0 alone prints and writes; the others train.
        self.main = distributed.is_main_process()
        self.echo = echo if self.main else (lambda _line: None)
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
        self.folder = RunFolder(self.exp_dir, self.comment, self.lineage, echo)
        self.protected: set[Path] = set()  # never pruned: the checkpoint this run resumed from
        self.writer = CheckpointWriter(background=True)
        self._stop_signal: int | None = None
        self._last_size = 0
        # --log_every_steps: training_steps.csv (training.step_log); opened at its first row; rank 0's alone
        self.step_log = StepLog(self.exp_dir, self.name, (args.get("log_every_steps") or 0) if self.main else 0,
                                lambda: self.optimizer.param_groups[0]["lr"])

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

    def _refuse_mixing_runs(self) -> None:
        """A resume into a folder holding another run under this run's names stops here, before
        anything is created or moved: continuing would archive, prune or relink that run's files."""
        if self.plan.mode != "resume":
            return  # a fresh or pretrained start archives the earlier run: nothing is mixed
        others = self.folder.other_runs_files(self.plan.source.path if self.plan.source is not None else None)
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
        self.device = torch.device("cuda", distributed.device_index()) if use_cuda and distributed.active() \
            else torch.device("cuda" if use_cuda else "cpu")
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
        self.train_model = distributed.wrap_model(self.model, self.device)  # DDP under torchrun

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
        self.history = rows_to_restore(source.path, ckpt)  # the log holds the rest (training.run_history)
        written_by = int(ckpt.get("world_size") or 1)
        if ckpt.get("partial") is not None:
            self.resume_step = int(ckpt.get("step_in_epoch", 0))
            self.resume_sums = shards.resume_sums(ckpt["partial"], written_by)
        shards.restore_rng(ckpt)
        note = shards.world_size_note(written_by, self.args["batch_size"])
        if note:
            self.echo(note)
        if self._continues_own_file():
            self.protected.add(source.path.resolve())

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        target = self.args["num_epochs"]
        if self.main:
            self._refuse_mixing_runs()
        with ExperimentLock(self.exp_dir) if self.main else contextlib.nullcontext():
            leftovers = remove_stale_temp_files(self.exp_dir) if self.main else []  # we hold the lock: no save is in flight
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
                if self.main:
                    self.folder.restore_log_rows(self.history, self.name)  # the final epoch's save may have been interrupted
                    self._republish_best()
                return 0
            if self.main:
                self._prepare_folder()
                self._republish_best()
            distributed.agree()  # the others start once rank 0 has the lock and the folder is ready
            self.echo(f"Training {self.name} on {self.device}: epochs {self.epoch + 1}-{target} "
                      f"({len(self.train_set)} train / {len(self.val_set)} val clips) -> {self.exp_dir}")
            first_epoch = self.epoch
            try:
                with self._signals_handled():
                    self._train(target)
            except TrainingStopped as stop:
                self.echo(str(stop))
                return EXIT_SIGNAL[stop.signum]
            except FloatingPointError:
                if self.epoch == first_epoch:
                    self.step_log.discard()  # nothing saved: the steps of this run describe nothing kept
                raise
            finally:
                self.writer.wait()
                self.step_log.close()
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
            if self._agreed_stop() is not None:
                self.writer.wait()
                distributed.stop_together()  # every rank leaves once the checkpoint is on disk
                raise TrainingStopped(self._stop_signal, self._stopped_message(epoch, 0, self._epoch_path(epoch)))

    def _render_attention(self, epoch: int, target: int) -> None:
        """``attention/epoch_N/`` on the scheduled epochs (training.attention); draws no RNG."""
        if not self.main or not self.viz_indices or not is_render_epoch(epoch, target, self.args["viz_frequency"]):
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
                          worker_init_fn=ignore_stop_signals if workers else None)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.train_model.train()
        # Every rank: its share of each of the same global batches (training.shards).
        batches = shards.train_batches(epoch_batches(len(self.train_set), self.args["batch_size"],
                                                     self.args["seed"], epoch))
        start = self.resume_step
        sums = EpochSums.from_state(self.resume_sums, self.device) if self.resume_sums else EpochSums()
        self.resume_step, self.resume_sums = 0, None
        self.train_set.set_epoch(epoch)  # RawBoost draws per (seed, epoch, clip); before the workers start
        bar = tqdm(self._loader(self.train_set, batches[start:]), total=len(batches), initial=start,
                   desc=f"Epoch {epoch}", leave=False, dynamic_ncols=True, file=sys.stderr, disable=not self.main)
        # The first step whose loss was not finite, kept on the device (-1: none yet), so that
        # checking it costs no per-step host sync; read before any save and at the epoch's end.
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.step_log.begin_epoch()
        for step, (x, y) in enumerate(bar, start=start + 1):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss, log_probs = self._step(x, y)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            sums.add(loss, log_probs, y)
            self.step_log.step_done(epoch, step, len(batches), len(y) * distributed.world_size(), loss)
            if step < len(batches) and self._agreed_stop() is not None:
                bar.close()
                self._stop_if_not_finite(epoch, first_bad)  # never save a diverged state
                self._save_interrupt(epoch, step, sums)
        bar.close()
        self._stop_if_not_finite(epoch, first_bad)
        return shards.merged_sums(sums).summary()

    def _agreed_stop(self) -> int | None:
        """The stop signal of this process, or under torchrun of any rank (one all_reduce)."""
        self._stop_signal = distributed.agreed_signal(self._stop_signal)
        return self._stop_signal

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
            output = self.train_model(x)
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
        distributed.share_buffers(self.model)  # under torchrun: score with the weights rank 0 saves
        batch_size = self.args["batch_size"]
        order = list(range(len(self.val_set)))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        sums = EpochSums()
        records = []  # under torchrun: this rank's batches, merged in order (training.shards)
        for x, y in self._loader(self.val_set, shards.validation_batches(batches)):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                output = self.model(x)
                loss, _ = self.criterion(output, y)
            if distributed.active():
                records.append((loss.float(), output.log_probs[:, BONAFIDE].float(), y))
            else:
                sums.add(loss, output.log_probs, y)
        return (shards.merged_validation(records, len(batches)) if distributed.active() else sums).summary()

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
            **history_fields(last, self.name),  # the full history lives once, in the log
            "lineage": self.lineage,
            **shards.rng_states(),  # gathered from every rank under torchrun
            "partial": partial,
            "world_size": distributed.world_size(),
            "saved_at": time.time(),
        }

    def _epoch_path(self, epoch: int) -> Path:
        return self.folder.epoch_path(epoch)

    def save_checkpoint(self, row: dict[str, Any], improved: bool) -> None:
        """Snapshot now (the loop is blocked only for this copy); write in the background."""
        state = self._checkpoint()  # every rank: the per-rank RNG states are gathered here
        if not self.main:
            return
        state = self.writer.snapshot(state)  # waits for the previous save (its buffers)
        path = self._epoch_path(self.epoch)
        best = self.exp_dir / best_checkpoint_name(self.comment)
        expected = self._last_size or state_nbytes(state)

        def write() -> None:
            self._last_size, digest = save_checkpoint(state, path, expected_size=expected)
            if improved:
                link_or_copy(path, best, digest, checkpoint_meta(state))
            self.folder.append_log(row)
            self.folder.remove_stale_interrupt(self.epoch)
            self._prune()

        self.writer.submit(write)

    def _save_interrupt(self, epoch: int, step: int, sums: EpochSums) -> None:
        self.writer.wait()
        path = self.exp_dir / interrupt_checkpoint_name(self.comment)
        state = self._checkpoint(step, shards.partial_state(sums))  # every rank takes part
        if self.main:
            state = snapshot_to_cpu(state)
            # Checked like every epoch save: refused before a byte is written when it cannot fit.
            save_checkpoint(state, path, expected_size=self._last_size or state_nbytes(state))
        distributed.stop_together()  # every rank leaves once the checkpoint is on disk
        raise TrainingStopped(self._stop_signal or signal.SIGTERM, self._stopped_message(epoch, step, path))

    def _stopped_message(self, epoch: int, step: int, path: Path) -> str:
        name = signal.Signals(self._stop_signal or signal.SIGTERM).name
        where = f"in epoch {epoch} after step {step}" if step else f"after epoch {epoch}"
        return (f"Stopped by {name} {where}: saved {path}. Continue with --auto_resume "
                f"(or --resume --model_path {path}).")

    def _republish_best(self) -> None:
        """On resume, make the best file hold the best epoch the checkpoint records (a kill may
        have left it one improvement behind): ``RunFolder.republish_best``."""
        if self.plan.mode == "resume" and self.best_epoch:
            self.folder.republish_best(self.best_epoch)

    def _prune(self) -> None:
        """``--keep_last K``: ``RunFolder.prune``, keeping the checkpoint resumed from and the best."""
        if self.args.get("keep_last"):
            self.folder.prune(self.args["keep_last"], self.protected, self.best_epoch)

    def _archive(self, files: list[Path], why: str) -> None:
        self.folder.archive(files, why)

    def _prepare_folder(self) -> None:
        """Move aside files this run would overwrite (never delete them); restore missing log rows.

        Only files under this run's names are looked at: files with another tag stay as they are.
        A fresh run archives the folder's earlier run. A resumed run archives checkpoints past
        its starting point: a branch it abandons, or corrupt files auto-resume skipped.
        """
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        own_names = [p for p in list_checkpoint_files(self.exp_dir) if carries_run_tag(p.name, self.comment)]
        if self.plan.mode != "resume":
            attention = self.exp_dir / ATTENTION_DIR
            earlier = own_names + self.folder.log_files() + ([attention] if has_entries(attention) else [])
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
        ahead += self.folder.attention_past(ATTENTION_DIR, self.epoch, abandoned_branch=bool(ahead))
        self._archive(ahead, f"Resuming at epoch {self.epoch}: checkpoints past it would be overwritten")
        self.folder.restore_log_rows(self.history, self.name)
        prepare_step_log(self.exp_dir, (self.epoch, self.resume_step))  # steps past it are trained again

    # -- signals --------------------------------------------------------------------------------

    def _signals_handled(self) -> "_SignalScope":
        return _SignalScope(self)


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

