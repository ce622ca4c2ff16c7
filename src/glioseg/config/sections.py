"""The six sections of a preset: frozen dataclasses with their choice lists and range tables.

Every setting of glioseg has its one home here: its field (type and default), its allowed values
(:data:`SECTION_CHOICES` for names, :data:`SECTION_RANGES` for numbers), checked whenever a
:class:`~glioseg.config.Config` is built (presets, ``--set``, checkpoints), before any work.
The command line builds its choices and ranges from the same tables. The modules that use a
section (``data``, ``networks``, ``inference``, ``training``) import it from here; this module
imports nothing of glioseg but the ground floor (:mod:`glioseg.errors`, :mod:`glioseg.validation`,
:mod:`glioseg.labels`), and neither PyTorch nor SciPy.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from glioseg.errors import GliosegError
from glioseg.labels import NUM_CLASSES, REGION_NAMES
from glioseg.validation import Range, check_fields, refuse

MODALITIES = ("flair", "t1", "t1ce", "t2")
"""The four BraTS modalities, in the order glioseg stacks them."""

CACHE_FORMAT = 1
"""Version of the cache's arrays, part of :meth:`PreprocessConfig.fingerprint`."""

LATER_DEFAULTS = {"soft_targets": False, "cascade_margin": None, "antialias": False}
"""Preprocessing settings added after caches were first written, with the value every older recipe had."""

NORMALIZATIONS = ("minmax", "zscore")
CROPS = ("fixed", "brain")
IMAGE_DTYPES = ("float16", "float32")

NETWORKS = ("unet", "resunet", "sa_unet")
"""The names :func:`build_network` accepts."""

PAPER_FILTERS = (16, 32, 64, 128, 256)
"""Filters per level of the paper's U-Net (4 poolings)."""

NORMS = ("none", "batch", "instance", "group")
"""Normalisation layers a block can use after each convolution."""

HEADS = ("classes", "regions")
"""Output heads: 4 class logits for softmax, or 3 region (WT, TC, ET) logits for sigmoid."""

DROPOUT_SCHEDULES = ("none", "tutorial", "table2")
"""Named dropout schedules :func:`dropout_schedule` expands (a preset may also list the rates)."""


def dropout_schedule(name: str, depth: int) -> tuple[float, ...]:
    """The rates of a named dropout schedule for a U-Net with ``depth`` poolings.

    Rates are listed block by block in forward order: ``stem, down_1, ..., down_L`` (the last
    is the bottleneck), then ``up_L, ..., up_1`` -- ``2 * depth + 1`` rates, the one form
    :class:`ModelConfig` and :class:`UNet` take.

    * ``none``: 0 everywhere.
    * ``tutorial``: the origin tutorial's, for depth 4: 0.1, 0.1, 0.2, 0.2 | 0.3 | 0.2, 0.2,
      0.1, 0.1.
    * ``table2``: the report's Table II ("Dropout 0.1 - 0.2"): the tutorial's with the
      bottleneck at 0.2, so no rate leaves the stated range.

    For another depth the shallower half of the encoder levels gets 0.1, the deeper half 0.2,
    and the decoder mirrors the encoder.

    Raises:
        ValueError: for an unknown name (the message lists :data:`DROPOUT_SCHEDULES`).
    """
    if name not in DROPOUT_SCHEDULES:
        raise ValueError(
            f"unknown dropout schedule {name!r}; choose one of {', '.join(DROPOUT_SCHEDULES)} or list {2 * depth + 1} "
            "rates"
        )
    if name == "none":
        return (0.0,) * (2 * depth + 1)
    encoder = tuple(0.1 if level < math.ceil(depth / 2) else 0.2 for level in range(depth))
    bottleneck = 0.3 if name == "tutorial" else 0.2
    return (*encoder, bottleneck, *encoder[::-1])

LOSS_NAMES = ("dice", "focal", "dice_focal", "bce", "dice_bce", "ce", "dice_ce")
"""Names accepted by :func:`build_loss`. ``dice_focal`` is the paper's loss."""

SAMPLINGS = ("whole", "patch")
"""``train.sampling``: whole preprocessed volumes (the paper) or random patches."""

OPTIMIZERS = ("adam", "adamw", "sgd")
"""``train.optimizer``."""

SCHEDULES = ("constant", "poly", "cosine")
"""``train.schedule`` (per epoch)."""

DEVICES = ("auto", "cpu", "cuda", "mps")
"""``train.device`` (also ``cuda:N``, see :func:`glioseg.device.resolve_device`)."""

BLENDS = ("gaussian", "constant")

CONNECTIVITIES = (6, 18, 26)
"""``postprocess.connectivity``: faces, faces and edges, all neighbours."""


PREPROCESS_RANGES = {
    "margin": Range(0, 512),
    "target_spacing": Range(0.05, 20),
    "min_tumor_fraction": Range(0, 1, high_open=True),
    "cascade_margin": Range(0, 200),
}
"""Allowed values of the numeric :class:`PreprocessConfig` fields (see :mod:`glioseg.validation`)."""

# Allowed values of the numeric fields, checked when a config is built (see glioseg.validation).
# A new numeric field gets a row here.
MODEL_RANGES = {
    "dropout": Range(0, 1, high_open=True),
    "filters": Range(1, 4096),
    "attention_kernel": Range(1, 31),
}
AUGMENT_RANGES = {
    **{
        name: Range(0, 1)
        for name in (
            "flip_prob",
            "rotate_prob",
            "scale_prob",
            "intensity_prob",
            "gamma_prob",
            "noise_prob",
            "modality_dropout",
            "lowres_prob",
        )
    },
    "lowres_max_factor": Range(1.5, 10),
    "max_rotation_deg": Range(0, 180),
    "scale_range": Range(0, 10, low_open=True),
    "intensity_scale_range": Range(0, 10, low_open=True),
    "intensity_shift": Range(0, 10),
    "gamma_range": Range(0, 10, low_open=True),
    "noise_std": Range(0, 10),
}
TRAIN_RANGES = {
    "epochs": Range(1, 100_000),
    "batch_size": Range(1, 4096),
    "patch_size": Range(1, 4096),
    "samples_per_epoch": Range(0),
    "foreground_fraction": Range(0, 1),
    "focal_weight": Range(0),
    "focal_alpha": Range(0, 1),
    "focal_gamma": Range(0, 10),
    "bce_weight": Range(0),
    "ce_weight": Range(0),
    "dice_smooth": Range(0, 1),
    "lr": Range(0, 10, low_open=True),
    "weight_decay": Range(0),
    "sgd_momentum": Range(0, 1, high_open=True),
    "poly_exponent": Range(0, 10, low_open=True),
    "grad_clip": Range(0),
    "val_fraction": Range(0, 1, low_open=True, high_open=True),
    "folds": Range(0, 1000),
    "fold": Range(0),
    "split_seed": Range(0),
    "val_every": Range(1),
    "seed": Range(0),
    "num_workers": Range(0, 256),
    "threads": Range(0, 4096),
    "time_limit_min": Range(0),
}
INFERENCE_RANGES = {
    "window": Range(1, 4096),
    "overlap": Range(0, 1, high_open=True),
    "sw_batch_size": Range(1, 4096),
    "region_threshold": Range(0, 1, low_open=True, high_open=True),
}
POSTPROCESS_RANGES = {
    "et_threshold": Range(0),
    "min_component_size": Range(0),
    "min_component_fraction": Range(0, 1),
    "max_components": Range(1),
    "keep_within_mm": Range(0, 1000),
    "min_et_component_size": Range(0),
    "min_core_component_size": Range(0),
    "min_et_component_fraction": Range(0, 1),
    "min_core_component_fraction": Range(0, 1),
}
SECTION_RANGES = {
    "preprocess": PREPROCESS_RANGES,
    "model": MODEL_RANGES,
    "augment": AUGMENT_RANGES,
    "train": TRAIN_RANGES,
    "inference": INFERENCE_RANGES,
    "postprocess": POSTPROCESS_RANGES,
}
"""Section -> field -> allowed range, checked whenever a :class:`Config` is built (presets, ``--set``, checkpoints)."""

SECTION_CHOICES: dict[str, dict[str, tuple]] = {
    "preprocess": {"normalization": NORMALIZATIONS, "crop": CROPS, "image_dtype": IMAGE_DTYPES},
    "model": {"name": NETWORKS, "norm": NORMS, "head": HEADS},
    "train": {"sampling": SAMPLINGS, "loss": LOSS_NAMES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES},
    "inference": {"blend": BLENDS},
    "postprocess": {"connectivity": CONNECTIVITIES},
}
"""Section -> field -> its choices, checked whenever a :class:`~glioseg.config.Config` is built.
(``train.device`` also takes ``cuda:N``: :func:`glioseg.device.resolve_device` checks it.)"""


@dataclass(frozen=True)
class PreprocessConfig:
    """One preprocessing recipe.

    Attributes:
        modalities: channels to stack, in order.
        normalization: ``"minmax"`` (per volume, to [0, 1]) or ``"zscore"`` (inside the brain).
        crop: ``"fixed"`` (the paper's box) or ``"brain"`` (bounding box of non-zero voxels).
        fixed_crop: the paper's box, ``((x0, x1), (y0, y1), (z0, z1))``.
        margin: voxels added around the brain box (``crop="brain"``).
        target_spacing: resample to this voxel size in mm, or ``None`` to keep the native grid.
        min_tumor_fraction: drop cases whose (cropped) tumor share is not above this.
        image_dtype: dtype of the cached image (``float16`` halves the cache).
        soft_targets: also keep, for each voxel of the preprocessed grid, the share of its
            footprint that lies in WT, TC and ET on the source grid
            (:func:`~glioseg.data.preprocess.region_fractions`): soft region targets for the
            ``regions`` head. A hard label resampled to 2 mm caps what a perfect prediction can
            score back on the 1 mm grid; the fractions do not.
        cascade_margin: ``None``, or this is a cascade stage (:mod:`glioseg.data.cascade`): the input is
            the modalities plus an earlier stage's prediction as WT/TC/ET channels, cropped to that
            prediction's tumour box widened by this many mm on each side (within the brain).
        antialias: before resampling to a coarser ``target_spacing``, smooth each channel inside the
            brain with a Gaussian that widens a voxel to the target's size along each axis
            (:func:`~glioseg.data.preprocess.antialias_sigmas`, :func:`~glioseg.data.preprocess.antialias_in_mask`).
            Trilinear resizing alone samples the 1 mm grid at points that drift between voxels, so
            half a voxel's shift of the same scan changes the network's input. Off by default: a
            recipe trained with it (D-bn-aa, session 15) moved as often under such a shift and
            scored 0.02-0.03 lower (docs/scanner.md).
    """

    modalities: tuple[str, ...] = MODALITIES
    normalization: str = "zscore"
    crop: str = "brain"
    fixed_crop: tuple[tuple[int, int], ...] = ((56, 184), (56, 184), (13, 141))
    margin: int = 0
    target_spacing: tuple[float, float, float] | None = None
    min_tumor_fraction: float = 0.0
    image_dtype: str = "float16"
    soft_targets: bool = False
    cascade_margin: float | None = None
    antialias: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "preprocess", PREPROCESS_RANGES)
        known = MODALITIES
        if (
            not self.modalities
            or len(set(self.modalities)) != len(self.modalities)
            or not set(self.modalities) <= set(known)
        ):
            raise refuse(
                "preprocess.modalities",
                list(self.modalities),
                f"is not a list of distinct modalities from {list(known)}",
                "give e.g. preprocess.modalities=[flair,t1,t1ce,t2]",
            )
        if len(self.fixed_crop) != 3 or any(len(pair) != 2 or not 0 <= pair[0] < pair[1] for pair in self.fixed_crop):
            raise refuse(
                "preprocess.fixed_crop",
                [list(p) for p in self.fixed_crop],
                "is not three [start, stop) pairs with 0 <= start < stop",
                "give e.g. preprocess.fixed_crop=[[56,184],[56,184],[13,141]]",
            )
        if self.target_spacing is not None and len(self.target_spacing) != 3:
            raise refuse(
                "preprocess.target_spacing",
                list(self.target_spacing),
                "is not three voxel sizes",
                "give e.g. preprocess.target_spacing=[2,2,2] or null",
            )
        if self.normalization not in ("minmax", "zscore"):
            raise GliosegError(None, f"unknown normalization '{self.normalization}'", "use minmax or zscore")
        if self.crop not in ("fixed", "brain"):
            raise GliosegError(None, f"unknown crop '{self.crop}'", "use fixed or brain")
        if self.image_dtype not in ("float16", "float32"):
            raise GliosegError(None, f"unknown image_dtype '{self.image_dtype}'", "use float16 or float32")

    @property
    def input_channels(self) -> int:
        """The network's input channels: one per modality, plus WT/TC/ET prior channels for a cascade stage."""
        return len(self.modalities) + (3 if self.cascade_margin is not None else 0)

    def recorded(self) -> dict:
        """The recipe as recorded and hashed: ``asdict`` without the fields of
        :data:`LATER_DEFAULTS` that hold their default, so that adding a setting leaves the
        fingerprints of existing caches, checkpoints' stamps and cv work folders as they were."""
        return {k: v for k, v in asdict(self).items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}

    def fingerprint(self) -> str:
        """A short hash of the recipe; cached cases with another fingerprint are redone."""
        payload = json.dumps({"format": CACHE_FORMAT, **self.recorded()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a network (the ``model`` section of a preset).

    Build it with :func:`~glioseg.networks.build_network`; the input channels come from the preprocessing
    (one per modality), so they are not part of it.

    Attributes:
        name: one of :data:`NETWORKS`.
        filters: channels per level, top to bottom; its length minus one is the number of poolings.
        norm: ``"none"`` (the origin tutorial), ``"batch"`` (the paper), ``"instance"`` or ``"group"``.
        head: ``"classes"`` (4 logits, softmax) or ``"regions"`` (WT, TC, ET logits, sigmoid);
            see :mod:`glioseg.heads`.
        dropout: ``2L + 1`` rates, block by block in forward order (stem, ``down_1`` ...
            ``down_L``, ``up_L`` ... ``up_1``); empty means no dropout. Presets may name a
            schedule instead (:func:`dropout_schedule`), which the loader expands.
        attention_kernel: spatial-attention kernel size (``sa_unet`` only).

    Lists (as read from YAML) are stored as tuples.

    Raises:
        ValueError: on an unknown name, head or norm, or inconsistent lengths and values.
    """

    name: str = "sa_unet"
    filters: tuple[int, ...] = PAPER_FILTERS
    norm: str = "batch"
    head: str = "classes"
    dropout: tuple[float, ...] = ()
    attention_kernel: int = 7

    def __post_init__(self) -> None:
        for name in ("filters", "dropout"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.name not in NETWORKS:
            raise ValueError(f"unknown network {self.name!r}; choose one of {', '.join(NETWORKS)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if len(self.filters) < 2 or min(self.filters) < 1:
            raise ValueError(f"filters needs at least 2 positive entries (one pooling), got {self.filters}")
        if not self.dropout:
            object.__setattr__(self, "dropout", dropout_schedule("none", self.depth))
        if len(self.dropout) != 2 * self.depth + 1:
            raise ValueError(
                f"dropout needs {2 * self.depth + 1} rates for filters {self.filters} (stem, down_1..down_L, "
                f"up_L..up_1), got {len(self.dropout)}; or name a schedule: {', '.join(DROPOUT_SCHEDULES)}"
            )
        check_fields(self, "model", MODEL_RANGES)
        if self.attention_kernel < 1 or self.attention_kernel % 2 == 0:
            raise ValueError(f"attention_kernel must be a positive odd number, got {self.attention_kernel}")

    @property
    def depth(self) -> int:
        """Number of poolings ``L``."""
        return len(self.filters) - 1

    @property
    def out_channels(self) -> int:
        """Logits per voxel: 4 for the classes head, 3 for the regions head."""
        return NUM_CLASSES if self.head == "classes" else len(REGION_NAMES)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the training augmentation.

    Every probability is per sample (per axis for flips). Defaults follow nnU-Net's.

    Attributes:
        flip_prob: probability of mirroring each spatial axis, independently.
        rotate_prob: probability of rotating (then about all three axes at once).
        max_rotation_deg: rotation angle about each axis is uniform in +-this (degrees).
        scale_prob: probability of isotropic zooming.
        scale_range: zoom factor range (>1 enlarges the content).
        intensity_prob: probability of a per-channel intensity scale and shift.
        intensity_scale_range: per-channel multiplicative factor range.
        intensity_shift: per-channel additive shift is uniform in +-this times the channel's
            standard deviation (over the non-background voxels).
        gamma_prob: probability of a per-channel gamma transform.
        gamma_range: gamma range; half the draws fall below 1, half above (when the range
            straddles 1), as in nnU-Net.
        noise_prob: probability of adding Gaussian noise.
        noise_std: noise standard deviation is uniform in [0, noise_std].
        modality_dropout: probability that a sample is shown without some of its modalities:
            the channels kept are a subset drawn uniformly from the non-empty proper subsets
            (14 of 4 modalities), the others are set to 0, the representation of an absent scan
            (:mod:`glioseg.data.modalities`). 0 (the default, and every shipped preset): never;
            only a model trained with it > 0 accepts cases that lack a modality.
        lowres_prob: probability that a sample is shown as thick-slice series are: along one axis (drawn per
            sample), each channel with probability 1/2 is averaged over slabs ``U(1.5, lowres_max_factor)``
            voxels thick, sampled at that spacing and interpolated back (nnU-Net's low-resolution simulation,
            along the slice axis only, as a clinical FLAIR or T2 of 5 mm slices is). 0 (the default): never.
        lowres_max_factor: the thickest slab, in voxels of the training grid (3 at 2 mm: 6 mm slices).
    """

    flip_prob: float = 0.5
    rotate_prob: float = 0.2
    max_rotation_deg: float = 15.0
    scale_prob: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    intensity_prob: float = 0.15
    intensity_scale_range: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.1
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.1
    noise_std: float = 0.1
    modality_dropout: float = 0.0
    lowres_prob: float = 0.0
    lowres_max_factor: float = 3.0

    def __post_init__(self) -> None:
        check_fields(self, "augment", AUGMENT_RANGES)
        for name in ("scale_range", "intensity_scale_range", "gamma_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise GliosegError(
                    None, f"augmentation {name}=({low}, {high}) is not a positive range", "use 0 < low <= high"
                )

    @classmethod
    def none(cls) -> AugmentConfig:
        """A configuration that disables every transform (patches are plain crops)."""
        return cls(flip_prob=0.0, rotate_prob=0.0, scale_prob=0.0, intensity_prob=0.0, gamma_prob=0.0, noise_prob=0.0)

    @property
    def enabled(self) -> bool:
        """Whether any transform can fire."""
        return any(
            p > 0
            for p in (
                self.flip_prob,
                self.rotate_prob,
                self.scale_prob,
                self.intensity_prob,
                self.gamma_prob,
                self.noise_prob,
                self.modality_dropout,
                self.lowres_prob,
            )
        )


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over ``samples_per_epoch`` samples (the training set once for ``sampling=whole``).
        batch_size: samples per optimiser step (per process under torchrun).
        sampling: ``whole`` (whole preprocessed volumes, the paper) or ``patch`` (random patches).
        patch_size: patch size in voxels for ``sampling=patch`` (the sliding window of validation
            and prediction is ``inference.window``).
        samples_per_epoch: patches per epoch for ``sampling=patch`` (0: one per training case).
        foreground_fraction: share of patches centred on tumor (nnU-Net: 1/3).
        loss: ``dice_focal`` (the paper), ``dice_ce``, ``dice_bce``, ``bce``, ``dice``, ``focal``, ``ce``.
        focal_weight: weight of the focal term in ``dice_focal`` (the paper: 1).
        focal_alpha: focal loss class weight (segmentation_models' default 0.25).
        focal_gamma: focal loss focusing exponent (segmentation_models' default 2).
        bce_weight: weight of the BCE term in ``dice_bce``.
        ce_weight: weight of the cross-entropy term in ``dice_ce``.
        dice_include_background: soft Dice over the ``classes`` head's background channel too.
        dice_batch: one soft Dice over the whole batch (segmentation_models' ``per_image=False``)
            rather than one per sample.
        dice_smooth: added to the soft Dice's numerator and denominator.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: learning rate.
        weight_decay: L2 / decoupled weight decay.
        sgd_momentum: momentum of ``sgd`` (nnU-Net: 0.99).
        sgd_nesterov: Nesterov momentum for ``sgd``.
        schedule: ``constant`` (the paper), ``poly`` or ``cosine`` (per epoch).
        poly_exponent: exponent of the ``poly`` schedule, ``lr * (1 - epoch / epochs) ** exponent``.
        grad_clip: clip the gradients' global L2 norm to this before each step (0: no clipping).
        val_fraction: share of cases held out for validation (the paper: 0.25).
        folds: 0 for a ratio split, else k for k-fold cross-validation (then ``fold`` picks one).
        fold: which fold is validation when ``folds > 0``.
        split_seed: seed of the split.
        val_every: validate every N epochs (on whole volumes, with the ``inference`` settings).
        amp: mixed precision (float16 autocast and a gradient scaler) on CUDA.
        tf32: let CUDA convolutions and matrix products use TF32 (false: full fp32 everywhere).
        seed: seed of weights, sampling and augmentation.
        deterministic: use deterministic algorithms (slower; exact resume).
        num_workers: data-loader worker processes.
        threads: torch CPU threads (0: leave torch's default).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        time_limit_min: stop after the epoch that passes this many minutes (0: no limit),
            so presets can be compared at an equal compute budget.
        init_from: a checkpoint (``.pt`` or run folder) whose weights the network starts from
            (fine-tuning, or a second training stage); the optimiser, schedule and epochs start
            fresh. ``None``: random initial weights. The network settings must match.

    The defaults of the fields added after the first release (``grad_clip`` 12, ``poly_exponent``
    0.9, ``sgd_momentum`` 0.99, the loss options, ``tf32``) are the values the code had
    hard-wired, so older run folders and checkpoints read back as they were trained.
    """

    epochs: int = 100
    batch_size: int = 2
    sampling: str = "whole"
    patch_size: tuple[int, int, int] = (128, 128, 128)
    samples_per_epoch: int = 0
    foreground_fraction: float = 0.33
    loss: str = "dice_focal"
    focal_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    bce_weight: float = 1.0
    ce_weight: float = 1.0
    dice_include_background: bool = True
    dice_batch: bool = True
    dice_smooth: float = 1e-5
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    sgd_momentum: float = 0.99
    sgd_nesterov: bool = True
    schedule: str = "constant"
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    val_fraction: float = 0.25
    folds: int = 0
    fold: int = 0
    split_seed: int = 42
    val_every: int = 1
    amp: bool = True
    tf32: bool = True
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    threads: int = 0
    device: str = "auto"
    time_limit_min: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_fields(self, "train", TRAIN_RANGES)
        if self.folds == 1:
            raise refuse(
                "train.folds",
                1,
                "is not a cross-validation (it needs 2 folds or more)",
                "give train.folds=0 for a ratio split, or 2 or more",
            )
        if self.folds >= 2 and self.fold >= self.folds:
            raise refuse(
                "train.fold",
                self.fold,
                f"is outside the allowed range (0..{self.folds - 1} for {self.folds} folds)",
                f"give train.fold a value in [0, {self.folds - 1}]",
            )


@dataclass(frozen=True)
class InferenceConfig:
    """How whole volumes are segmented, in validation and prediction (the ``inference`` section).

    Attributes:
        window: the sliding window in voxels. A preset or an older checkpoint that does not
            give it gets ``train.patch_size`` (:func:`~glioseg.config.migrate`), the window every
            earlier glioseg used.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        sw_batch_size: windows per forward pass (speed and memory only).
        blend: ``gaussian`` (nnU-Net) or ``constant`` weighting of overlapping windows.
        mirror: average over the 8 axis flips (test-time augmentation; 8 times slower).
        region_threshold: ``regions`` head: a region is present where its probability exceeds this.

    Raises:
        GliosegError: a value out of its range (:data:`INFERENCE_RANGES`).
        ValueError: an unknown blend.
    """

    window: tuple[int, int, int] = (128, 128, 128)
    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: str = "gaussian"
    mirror: bool = False
    region_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_fields(self, "inference", INFERENCE_RANGES)
        if self.blend not in BLENDS:
            raise ValueError(f"unknown blend {self.blend!r}; choose one of {', '.join(BLENDS)}")


@dataclass(frozen=True)
class PostprocessConfig:
    """Which post-processing steps to apply (all off by default).

    Attributes:
        et_threshold: predicted ET with fewer voxels than this becomes necrosis (0: off).
        min_component_size: remove whole-tumor components smaller than this, the largest
            component always kept (0: off).
        min_component_fraction: remove whole-tumor components smaller than this fraction of the
            largest whole-tumor component (0: off): a speck goes, a second tumour focus stays.
        max_components: keep at most this many whole-tumor components, largest first
            (``None``: no limit). Applies only when ``min_component_size > 0`` or
            ``min_component_fraction > 0``.
        keep_within_mm: a whole-tumor component whose nearest voxel lies within this distance (mm)
            of the largest component is kept as part of it, whatever its size (0: off): a tumour
            that the prediction splits by a thin gap keeps both pieces. Applies only when
            ``min_component_size > 0`` or ``min_component_fraction > 0``.
        connectivity: 6 (faces), 18 (faces and edges) or 26 (all neighbours) for components.
        min_et_component_size: enhancing-tumor components smaller than this become necrosis,
            the largest ET component always kept (0: off).
        min_core_component_size: tumor-core (necrosis + ET) components smaller than this become
            edema, the largest tumor-core component always kept (0: off).
        min_et_component_fraction: enhancing-tumor components smaller than this fraction of the
            largest ET component become necrosis (0: off).
        min_core_component_fraction: tumor-core components smaller than this fraction of the
            largest tumor-core component become edema (0: off).
    """

    et_threshold: int = 0
    min_component_size: int = 0
    min_component_fraction: float = 0.0
    max_components: int | None = None
    keep_within_mm: float = 0.0
    connectivity: int = 26
    min_et_component_size: int = 0
    min_core_component_size: int = 0
    min_et_component_fraction: float = 0.0
    min_core_component_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "postprocess", POSTPROCESS_RANGES)
        if self.connectivity not in (6, 18, 26):
            raise ValueError(f"connectivity must be 6, 18 or 26, got {self.connectivity}")

    @property
    def active(self) -> bool:
        """True when at least one step changes anything."""
        return (
            self.et_threshold > 0
            or self.min_component_size > 0
            or self.min_component_fraction > 0
            or self.min_et_component_size > 0
            or self.min_core_component_size > 0
            or self.min_et_component_fraction > 0
            or self.min_core_component_fraction > 0
        )
