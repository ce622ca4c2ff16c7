"""The training loop: data, model, loss and optimiser injected; a run folder that resumes exactly.

A run folder holds:

* ``config.yaml`` -- the resolved preset; ``split.json`` -- the train/val case ids;
  ``cache.txt`` -- the path of the preprocessed cache it trains on;
* ``metrics.csv`` -- one row per epoch: train loss, voxel accuracy (share of voxels whose
  predicted label is the reference's, for both heads) and the paper's IoU; the same on
  validation (the sliding window and decode step of ``glioseg predict``, on the original grid)
  with Dice WT/TC/ET when validated;
  learning rate; wall time;
* ``last.pt`` (every epoch, atomically) and ``best.pt`` (best mean validation Dice);
* ``train.log`` and ``curves.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from glioseg.checkpoint import build_model, load_checkpoint, save_checkpoint
from glioseg.config import Config, config_from_dict
from glioseg.data.cache import cached_case_ids, load_cached
from glioseg.data.dataset import PatchDataset, WholeVolumeDataset
from glioseg.data.preprocess import PreprocessedCase
from glioseg.data.splits import kfold_split, load_split, ratio_split, save_split
from glioseg.device import resolve_device
from glioseg.errors import GliosegError
from glioseg.files import check_outputs_apart, write_text
from glioseg.heads import label_targets, probabilities_to_labels, probabilities_to_logits, to_probabilities
from glioseg.inference.decode import decode_crop
from glioseg.inference.sliding import sliding_window_probabilities
from glioseg.labels import REGIONS, region_masks
from glioseg.losses import build_loss
from glioseg.memory import keep_freed_memory
from glioseg.metrics import accuracy, dice, paper_iou
from glioseg.parallel import loader_batches, loader_worker_init_fn
from glioseg.training.distributed import DistInfo, all_reduce_mean, barrier, cleanup, decided_by_main, init_distributed

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "epoch", "train_loss", "train_voxel_accuracy", "train_iou",
    "val_loss", "val_voxel_accuracy", "val_iou", "val_dice_wt", "val_dice_tc", "val_dice_et", "val_dice_mean",
    "lr", "time_s",
)


def make_split(config: Config, cache: Path) -> dict:
    """The split of a new run, computed from the cached case ids with the preset's split settings (saved as
    ``RUN/split.json``).

    Raises:
        GliosegError: fewer than 2 usable cases, a fold out of range, or a cache entry made by
            another preprocessing recipe than ``config.preprocess``.
    """
    ids = cached_case_ids(cache, config.preprocess)
    if len(ids) < 2:
        raise GliosegError(
            cache,
            f"holds {len(ids)} usable case(s), training needs at least 2",
            "run `glioseg preprocess` on your data first",
        )
    t = config.train
    if t.folds:
        folds = kfold_split(ids, k=t.folds, seed=t.split_seed)
        if not 0 <= t.fold < t.folds:
            raise GliosegError(None, f"fold {t.fold} out of range for {t.folds} folds", f"use 0..{t.folds - 1}")
        return folds[t.fold]
    return ratio_split(ids, val_fraction=t.val_fraction, seed=t.split_seed)


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    t = config.train
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.sgd_momentum, nesterov=t.sgd_nesterov, weight_decay=t.weight_decay
        )
    raise GliosegError(None, f"unknown optimizer '{t.optimizer}'", "use adam, adamw or sgd")


def make_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch learning-rate factor: constant (the paper), poly (nnU-Net, ``train.poly_exponent``) or cosine."""
    epochs, name, exponent = config.train.epochs, config.train.schedule, config.train.poly_exponent
    factors = {
        "constant": lambda e: 1.0,
        "poly": lambda e: (1 - min(e, epochs) / epochs) ** exponent,
        "cosine": lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs)),
    }
    if name not in factors:
        raise GliosegError(None, f"unknown schedule '{name}'", "use constant, poly or cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[name])


@dataclass
class EpochStats:
    loss: float = 0.0
    accuracy: float = 0.0
    iou: float = 0.0
    steps: int = 0

    def add(self, loss: float, accuracy: float, iou: float) -> None:
        self.loss += loss
        self.accuracy += accuracy
        self.iou += iou
        self.steps += 1

    def means(self) -> tuple[float, float, float]:
        n = max(self.steps, 1)
        return self.loss / n, self.accuracy / n, self.iou / n


def make_loss(config: Config) -> nn.Module:
    """The loss of ``config.train`` (all its options from the preset) for the model's head."""
    t = config.train
    return build_loss(
        t.loss, head=config.model.head, include_background=t.dice_include_background, batch_dice=t.dice_batch,
        dice_smooth=t.dice_smooth, focal_alpha=t.focal_alpha, focal_gamma=t.focal_gamma, focal_weight=t.focal_weight,
        bce_weight=t.bce_weight, ce_weight=t.ce_weight,
    )


@torch.no_grad()
def validate(
    model: nn.Module,
    cases: Sequence[PreprocessedCase],
    loss_fn: nn.Module,
    config: Config,
    device: torch.device,
) -> dict[str, float]:
    """Whole-volume validation with the decode step of ``glioseg predict``.

    Each case goes through the sliding window of the ``inference`` section (blended
    probabilities, :func:`glioseg.inference.sliding.sliding_window_probabilities`) and the one
    decode step (:func:`glioseg.inference.decode.decode_crop`: back to the original resolution,
    labels, post-processing), and is scored against its label map there
    (:meth:`~glioseg.data.preprocess.PreprocessedCase.reference_on_crop`): the Dice that picks
    ``best.pt`` is the Dice of the labels ``glioseg predict`` writes, on every recipe. The loss
    and the paper's IoU are those of the blended probabilities on the preprocessed grid (the
    loss turned back into logits, :func:`glioseg.heads.probabilities_to_logits`).

    Returns:
        Mean over cases of ``loss``, ``voxel_accuracy`` (share of the crop's voxels with the
        reference's label, :func:`glioseg.metrics.accuracy`), ``iou`` (the paper's, of the
        thresholded probabilities) and ``dice_wt/tc/et`` (BraTS empty rules).
    """
    was_training = model.training
    model.eval()
    head, inference = config.model.head, config.inference
    rows = []
    for case in cases:
        reference = case.reference_on_crop()
        assert case.label is not None and reference is not None  # _load_cases keeps labelled cases only
        image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None].to(device)
        probs = sliding_window_probabilities(
            model, image, head=head, patch_size=inference.window, overlap=inference.overlap,
            sw_batch_size=inference.sw_batch_size, mirror=inference.mirror, blend=inference.blend,
        )  # (1, K, X, Y, Z)
        labels = torch.from_numpy(case.label.astype(np.int64))[None].to(device)
        pred = decode_crop(probs[0], case.crop, config)  # decode() without pasting into the whole scan
        pred_regions, ref_regions = region_masks(pred), region_masks(reference)
        rows.append(
            {
                "loss": float(loss_fn(probabilities_to_logits(probs, head), labels)),
                "voxel_accuracy": accuracy(pred, reference),
                "iou": float(paper_iou(probs, label_targets(labels, head))),
                **{f"dice_{r}": dice(pred_regions[r], ref_regions[r]) for r in REGIONS},
            }
        )
    model.train(was_training)
    means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    means["dice_mean"] = float(np.mean([means[f"dice_{r}"] for r in REGIONS]))
    return means


@dataclass
class Trainer:
    """Trains one model on preprocessed cases and keeps its run folder.

    Build it with :func:`build_trainer`; parts can also be injected directly (tests do).
    ``clock`` (seconds, monotonic) measures the time limit; under ``torchrun`` rank 0's clock
    decides for all ranks, so every rank stops after the same epoch.
    """

    config: Config
    run_dir: Path
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_dataset: PatchDataset | WholeVolumeDataset
    val_cases: list[PreprocessedCase]
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    progress: bool = True
    epoch: int = 0
    best_metric: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    clock: Callable[[], float] = time.perf_counter

    def __post_init__(self) -> None:
        cuda = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.config.train.amp)
        self.autocast = cuda and self.config.train.amp
        self.ddp_model = self.model
        if self.dist.enabled:
            ids = [self.dist.local_rank] if cuda else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "rng": rng_state(),
            "history": self.history,
        }

    def load_state(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.epoch = int(payload["epoch"])
        self.best_metric = float(payload["best_metric"])
        self.history = list(payload.get("history", []))
        set_rng_state(payload["rng"])

    # -- loop --------------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        t = self.config.train
        self.train_dataset.set_epoch(self.epoch)
        sampler: DistributedSampler | list[int]
        if self.dist.enabled:
            sampler = DistributedSampler(
                self.train_dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=t.seed
            )
            sampler.set_epoch(self.epoch)
        else:
            sampler = np.random.default_rng([t.seed, self.epoch]).permutation(len(self.train_dataset)).tolist()
        return DataLoader(
            self.train_dataset, batch_size=t.batch_size, sampler=sampler, num_workers=t.num_workers, drop_last=False,
            worker_init_fn=loader_worker_init_fn() if t.num_workers > 0 else None,
        )

    def train_epoch(self) -> tuple[float, float, float]:
        from tqdm.auto import tqdm

        self.ddp_model.train()
        head = self.config.model.head
        stats = EpochStats()
        with loader_batches(self._loader()) as batches:  # its worker processes end with this one
            bar = tqdm(
                batches,
                desc=f"epoch {self.epoch + 1}/{self.config.train.epochs}",
                unit="step",
                leave=False,
                disable=not (self.progress and self.dist.is_main),
            )
            for batch in bar:  # (image, labels), or (image, labels, soft targets) with preprocess.soft_targets
                image, labels = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
                target = batch[2].to(self.device, non_blocking=True) if len(batch) > 2 else labels
                self.optimizer.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, enabled=self.autocast):
                    logits = self.ddp_model(image)
                    loss = self.loss_fn(logits.float(), target)
                if not torch.isfinite(loss):
                    raise GliosegError(
                        self.run_dir,
                        f"loss became {float(loss)} at epoch {self.epoch + 1}",
                        "lower the learning rate or use amp: false",
                    )
                self.scaler.scale(loss).backward()
                if self.config.train.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                with torch.no_grad():
                    probs = to_probabilities(logits.float(), head)
                    pred = probabilities_to_labels(probs, head, self.config.inference.region_threshold, axis=1)
                    acc = float(
                        (pred.long() == labels.long()).float().mean()
                    )  # voxel accuracy, as glioseg.metrics.accuracy
                    stats.add(float(loss), acc, float(paper_iou(probs, label_targets(labels, head))))
                bar.set_postfix(loss=f"{stats.loss / stats.steps:.4f}")
            bar.close()
        loss, accuracy, iou = (all_reduce_mean(v, self.dist) for v in stats.means())
        return loss, accuracy, iou

    def fit(self) -> list[dict[str, float]]:
        """Train from ``self.epoch`` to ``config.train.epochs`` (or the time limit).

        The time limit is checked after each epoch on rank 0's clock and broadcast, so under
        ``torchrun`` all ranks stop after the same epoch (and rank 0 writes its outputs).
        """
        t = self.config.train
        started = self.clock()
        elapsed_before = self.history[-1]["time_s"] if self.history else 0.0
        while self.epoch < t.epochs:
            train_loss, train_acc, train_iou = self.train_epoch()
            self.epoch += 1
            self.scheduler.step()
            row: dict[str, float] = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "train_voxel_accuracy": train_acc,
                "train_iou": train_iou,
            }
            elapsed = elapsed_before + self.clock() - started
            out_of_time = t.time_limit_min > 0 and decided_by_main(elapsed >= 60 * t.time_limit_min, self.dist)
            last = self.epoch == t.epochs or out_of_time
            if self.val_cases and (self.epoch % t.val_every == 0 or last):
                val = (
                    validate(self.model, self.val_cases, self.loss_fn, self.config, self.device)
                    if self.dist.is_main
                    else {}
                )
                row.update({f"val_{k}": v for k, v in val.items()})
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["time_s"] = elapsed_before + self.clock() - started
            self.history.append(row)
            improved = "val_dice_mean" in row and row["val_dice_mean"] > self.best_metric
            if improved:
                self.best_metric = row["val_dice_mean"]
            if self.dist.is_main:
                self._write_outputs(improved)
                logger.info(
                    "epoch %d/%d  loss %.4f%s  %.0f s",
                    self.epoch,
                    t.epochs,
                    train_loss,
                    "".join(f"  {k} {row[k]:.3f}" for k in ("val_dice_wt", "val_dice_tc", "val_dice_et") if k in row),
                    row["time_s"],
                )
            barrier(self.dist)
            if out_of_time:
                logger.info("time limit of %g min reached after epoch %d", t.time_limit_min, self.epoch)
                break
        return self.history

    def _write_outputs(self, improved: bool) -> None:
        state = self.state()
        save_checkpoint(self.run_dir / "last.pt", state)
        if improved or not (self.run_dir / "best.pt").exists():
            save_checkpoint(self.run_dir / "best.pt", state)
        write_metrics_csv(self.run_dir / "metrics.csv", self.history)
        from glioseg.training.curves import training_curves  # matplotlib only once a run writes

        columns = {key: np.array([float(row.get(key, np.nan)) for row in self.history]) for key in CSV_COLUMNS}
        training_curves(columns, f"{self.config.model.name} ({self.run_dir.name})", self.run_dir / "curves.png")


def rng_state() -> dict[str, Any]:
    """The torch RNG states a run depends on (numpy draws come from per-item generators)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (other entries of older checkpoints are ignored)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_metrics_csv(path: Path, history: Sequence[dict[str, float]]) -> None:
    """Rewrite ``metrics.csv`` atomically from the history (so it always matches the checkpoint)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def _load_cases(cache: Path, ids: Sequence[str], config: Config) -> list[PreprocessedCase]:
    """Read cached cases, each checked against the preset's preprocessing recipe."""
    cases = [load_cached(cache, case_id, config.preprocess) for case_id in ids]
    for case in cases:
        if case.label is None:
            raise GliosegError(
                cache / f"{case.case_id}.npz", "cached case has no label map", "train only on cases with labels"
            )
    return cases


RUN_FILES = ("config.yaml", "split.json", "cache.txt", "last.pt", "best.pt", "metrics.csv")
"""The files a run folder holds (see the module docstring)."""


def load_initial_weights(model: nn.Module, config: Config, source: str | Path) -> None:
    """Copy the weights of checkpoint ``source`` into ``model`` (``train.init_from``).

    Raises:
        GliosegError: the checkpoint is unreadable, or its network differs from ``config.model``
            or its modalities from ``config.preprocess.modalities`` (the message names each difference).
    """
    payload = load_checkpoint(source)
    theirs = config_from_dict(payload["config"], str(source))
    differences = [
        f"{key} {getattr(theirs.model, key)!r} vs {getattr(config.model, key)!r}"
        for key in ("name", "filters", "norm", "head", "attention_kernel")
        if getattr(theirs.model, key) != getattr(config.model, key)
    ]
    if theirs.preprocess.modalities != config.preprocess.modalities:
        differences.append(f"modalities {list(theirs.preprocess.modalities)} vs {list(config.preprocess.modalities)}")
    if differences:
        raise GliosegError(
            source,
            f"train.init_from: its network differs from this run's ({'; '.join(differences)})",
            "start from a checkpoint of the same network, or set model.* to match it",
        )
    try:
        model.load_state_dict({name: tensor.float() for name, tensor in payload["model"].items()})
    except (RuntimeError, KeyError, AttributeError) as exc:
        problem = f"train.init_from: its weights do not fit this network ({' '.join(str(exc).split())[:160]})"
        raise GliosegError(source, problem, "start from a checkpoint written by glioseg for the same network") from None
    logger.info("initial weights from %s", source)


def build_trainer(
    config: Config,
    cache: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    split: dict | None = None,
) -> Trainer:
    """Assemble a :class:`Trainer` for ``config`` on the preprocessed ``cache``.

    With ``resume``, everything (model, optimiser, scheduler, scaler, RNG states, epoch,
    history, split) continues from ``run_dir/last.pt``. ``split`` (a new run only) gives the
    train/val case ids instead of the preset's split of the cached cases (the cross-validation
    fixes its folds over the whole dataset; an empty ``val`` trains without validation).
    """
    cache, run_dir = Path(cache), Path(run_dir)
    t = config.train
    keep_freed_memory()  # a third less CPU per step on the CPU (see glioseg.memory)
    device = resolve_device(t.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    if device.type == "cuda" and not t.tf32:  # fp32 everywhere: no TF32 in convolutions or matrix products
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(t.seed)

    split_path = run_dir / "split.json"
    if t.init_from and not resume:  # e.g. --init-from RUN/best.pt of this very run: training would replace it
        check_outputs_apart([run_dir / name for name in RUN_FILES], [t.init_from])
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise GliosegError(run_dir, "no last.pt to resume from", "start the run instead of resuming it")
        split = load_split(split_path)
    else:
        if (run_dir / "last.pt").exists():
            raise GliosegError(run_dir, "already holds a run", "resume it to continue, or choose another run folder")
        split = make_split(config, cache) if split is None else split
    train_cases = _load_cases(cache, split["train"], config)
    val_cases = _load_cases(cache, split["val"], config) if dist_info.is_main else []
    images, labels = [c.image for c in train_cases], [c.label for c in train_cases if c.label is not None]
    augment = config.augment if config.augment.enabled else None
    dataset: PatchDataset | WholeVolumeDataset
    if t.sampling == "patch":
        targets = [c.regions for c in train_cases if c.regions is not None] if config.preprocess.soft_targets else None
        if targets is not None and len(targets) != len(train_cases):
            raise GliosegError(
                cache,
                "cached cases hold no soft region targets",
                "preprocess the data again with preprocess.soft_targets: true",
            )
        dataset = PatchDataset(
            images,
            labels,
            t.patch_size,
            t.samples_per_epoch or len(images),
            t.foreground_fraction,
            augment,
            t.seed,
            targets,
        )
    elif t.sampling == "whole":
        dataset = WholeVolumeDataset(images, labels, augment, t.seed)
    else:
        raise GliosegError(None, f"unknown sampling '{t.sampling}'", "use whole or patch")

    model = build_model(config)
    if t.init_from and not resume:  # a resumed run's weights come from its own last.pt
        load_initial_weights(model, config, t.init_from)  # before the run folder: a bad checkpoint leaves nothing

    if dist_info.is_main and not resume:  # only once the data and the initial weights are known to be usable
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GliosegError(
                run_dir, f"cannot create the run folder ({exc.strerror})", "choose a folder you can write to"
            ) from None
        save_split(split_path, split)
        write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_plain_dict(), sort_keys=False))
        write_text(run_dir / "cache.txt", f"{cache.resolve()}\n")
    barrier(dist_info)

    model = model.to(device)
    loss_fn = make_loss(config)
    optimizer = make_optimizer(model, config)
    trainer = Trainer(
        config=config, run_dir=run_dir, model=model, loss_fn=loss_fn, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config), train_dataset=dataset, val_cases=val_cases,
        device=device, dist=dist_info, progress=progress,
    )
    if resume:
        for stale in run_dir.glob(".*.tmp*"):  # left by a write that a crash or kill -9 interrupted
            stale.unlink(missing_ok=True)
        trainer.load_state(load_checkpoint(run_dir / "last.pt", map_location=device))
    return trainer


def run_settings(run_dir: str | Path) -> tuple[Config, Path]:
    """The preset and the cache of an existing run folder (to resume it).

    Raises:
        GliosegError: ``run_dir`` is not a run folder written by :func:`build_trainer`.
    """
    from glioseg.config import load_config

    run_dir = Path(run_dir)
    config_file, cache_file = run_dir / "config.yaml", run_dir / "cache.txt"
    for required in (config_file, cache_file):
        if not required.is_file():
            raise GliosegError(
                run_dir,
                f"is not a glioseg run folder (no {required.name})",
                "pass a run folder that `glioseg train` wrote",
            )
    config = load_config(config_file)
    try:
        cache = Path(cache_file.read_text().strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise GliosegError(
            cache_file, f"cannot be read ({exc})", "write the path of the run's cache folder into it"
        ) from None
    return config, cache




def train(
    config: Config,
    cache: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    split: dict | None = None,
) -> list[dict[str, float]]:
    """Train ``config`` on ``cache`` into ``run_dir``; returns the per-epoch history (``split``: see
    :func:`build_trainer`)."""
    trainer = build_trainer(config, cache, run_dir, resume=resume, progress=progress, split=split)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.dist)
