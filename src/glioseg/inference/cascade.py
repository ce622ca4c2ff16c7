"""Predicting with a cascade (issue 22): stage 1's label map, then stage 2 at 1 mm on the crop around its tumour.

:class:`CascadePredictor` is a :class:`~glioseg.inference.predictor.Predictor` of the cascade stage's
models whose preprocessing first asks a *prior* for the case's stage-1 label map:

* :class:`StagePrior`: stage 1's predictor runs on the case (``glioseg predict --model PACK`` with a
  pack of a cascade stage, whose ``prior/`` folder holds stage 1's models, packed with the
  post-processing they were trained with, so the prior is what the cascade stage was trained on);
* :class:`FilePrior`: stage 1's out-of-fold label map in a folder (``cv train``'s held-out predictions).

The case is then cut to the prior's tumour box plus ``preprocess.cascade_margin`` mm
(:func:`glioseg.data.cascade.cascade_input`), stage 2's labels are decided on that crop without
post-processing, pasted into the prior's label map (outside the crop, stage 1's labels stand), and the
cascade stage's post-processing runs on the whole pasted map, as ``cv report`` chose it on the pasted
out-of-fold maps. A case whose prior holds no tumour keeps stage 1's labels (post-processed alike).

The time of stage 1 is counted in the ``preprocess`` stage of the per-case timings; ``network`` is stage 2's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glioseg.checksums import is_pack, read_pack
from glioseg.data.cascade import cascade_input, paste, prior_channels, read_prior
from glioseg.data.discovery import LoadedCase
from glioseg.data.preprocess import CropInfo, PreprocessedCase
from glioseg.errors import GliosegError
from glioseg.inference.predictor import Predictor

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PRIOR_FOLDER = "prior"
"""The sub-folder of a cascade stage's model folder that holds its prior stage's models (a model folder itself)."""


class FilePrior:
    """The prior of a case: ``FOLDER/<case>.nii.gz``, a label map of stage ``stage`` in the case's convention."""

    def __init__(self, folder: Path, stage: str) -> None:
        self.folder, self.stage = Path(folder), stage
        self.checksum = f"file:{stage}"

    def __call__(self, loaded: LoadedCase) -> np.ndarray:
        path = self.folder / f"{loaded.case.case_id}.nii.gz"
        return read_prior(path, loaded.case, loaded.shape, loaded.affine, self.stage)


class StagePrior:
    """The prior of a case: stage 1's predictor's labels (with the post-processing in its config)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.checksum = predictor.model_checksum

    def __call__(self, loaded: LoadedCase) -> np.ndarray:
        stage1 = self.predictor
        pre = stage1.preprocess(loaded)
        probabilities = stage1.network_probabilities(pre.image)
        return stage1.labels_from_probabilities(probabilities, pre.crop)


class CascadePredictor(Predictor):
    """Stage 2 (``stage2``'s models, a cascade stage) on the crop around ``prior``'s tumour, pasted into the prior.

    Args:
        stage2: a predictor of the cascade stage's models (its config has ``preprocess.cascade_margin``).
        prior: the stage-1 label map of a loaded case (:class:`StagePrior` or :class:`FilePrior`).

    Raises:
        GliosegError: ``stage2``'s models are not a cascade stage, or a stage-1 predictor reads other modalities.
    """

    def __init__(self, stage2: Predictor, prior: StagePrior | FilePrior) -> None:
        if stage2.config.preprocess.cascade_margin is None:
            raise GliosegError(
                None, "the second stage's models are not a cascade stage", "give the models of a cascade stage"
            )
        if isinstance(prior, StagePrior) and prior.predictor.config.preprocess.modalities != (
            stage2.config.preprocess.modalities
        ):
            raise GliosegError(
                None,
                "the cascade's two stages read other modalities",
                "pack a cascade whose stages share their modalities",
            )
        self.__dict__.update(stage2.__dict__)
        self.prior = prior
        self.model_checksum = hashlib.sha256(f"{prior.checksum}#{stage2.model_checksum}".encode()).hexdigest()
        self._pending: tuple[np.ndarray, CropInfo | None] | None = None

    def preprocess(self, loaded: LoadedCase) -> PreprocessedCase:
        """Stage 1's labels, then the case on the crop around them with their region channels (see the module)."""
        prior = self.prior(loaded)
        pre = super().preprocess(loaded)
        margin = self.config.preprocess.cascade_margin
        assert margin is not None
        cut = cascade_input(pre, prior, margin)
        self._pending = (prior, None if cut is None else cut.crop)
        if cut is None:
            logger.info("%s: stage 1 found no tumour; its labels stand", loaded.case.case_id)
            empty = np.zeros((pre.image.shape[0] + 3, 0, 0, 0), np.float32)
            return PreprocessedCase(pre.case_id, empty, None, pre.crop)
        return cut

    def network_probabilities(self, image: np.ndarray) -> torch.Tensor | np.ndarray:
        """Stage 2's probabilities on the crop (none for a case without a crop)."""
        if image.size == 0:
            return np.zeros((len(self.channel_names), *image.shape[1:]), np.float32)
        return super().network_probabilities(image)

    def _taken(self) -> tuple[np.ndarray, CropInfo | None]:
        if self._pending is None:
            raise GliosegError(None, "the cascade decoded a case it did not preprocess", "call preprocess first")
        return self._pending

    def labels_from_probabilities(self, probabilities: torch.Tensor | np.ndarray, crop: CropInfo) -> np.ndarray:
        """Stage 2's raw labels on the crop pasted into stage 1's, then the cascade stage's post-processing."""
        from glioseg.inference.decode import decode_crop
        from glioseg.inference.postprocess import PostprocessConfig, postprocess

        prior, cut = self._taken()
        labels = prior
        if cut is not None:
            inner = decode_crop(probabilities, cut, self.config, PostprocessConfig())
            labels = paste(prior, inner, cut.box)
        return postprocess(labels.astype(np.uint8, copy=False), self.postprocessing, crop.original_spacing)

    def to_original_probabilities(self, probabilities: np.ndarray, crop: CropInfo) -> np.ndarray:
        """Stage 2's probabilities on the crop; outside it, stage 1's labels as 0/1 probabilities."""
        prior, cut = self._taken()
        if self.head == "regions":
            full = prior_channels(prior)
        else:
            full = (prior[None] == np.arange(len(self.channel_names)).reshape(-1, 1, 1, 1)).astype(np.float32)
        if cut is not None:
            full[(slice(None), *(slice(a, b) for a, b in cut.box))] = self._resize(
                probabilities.astype(np.float32, copy=False), cut.cropped_shape
            )
        return full


def is_cascade_pack(path: str | Path) -> bool:
    """True for a model folder of a cascade stage (its ``pack.json`` names a ``cascade``)."""
    return is_pack(path) and bool(read_pack(path).get("cascade"))


def cascade_from_pack(
    folder: str | Path, stage2: Predictor, make_predictor: Callable[..., Predictor]
) -> CascadePredictor:
    """The cascade of a model folder: ``make_predictor`` loads ``folder/prior`` (stage 1, with the
    post-processing and inference settings it was packed with: ``predict``'s window, overlap, mirror and
    post-processing options apply to stage 2 only), ``stage2`` is the folder's own members.

    Raises:
        GliosegError: the folder's ``prior/`` sub-folder is missing or not a model folder, or holds the models of
            a cascade stage.
    """
    from glioseg.inference.predictor import resolve_checkpoints

    manifest: dict[str, Any] = read_pack(folder)
    prior = Path(folder) / str(manifest["cascade"].get("folder", PRIOR_FOLDER))
    if not is_pack(prior):
        raise GliosegError(
            prior,
            "is missing or not a model folder: a cascade model needs its first stage's models there",
            "copy the whole model folder, or pack it again with `glioseg cv pack`",
        )
    unset: dict[str, Any] = {"postprocess_overrides": {}, "overlap": None, "sw_batch_size": None, "mirror": None}
    unset["patch_size"] = None
    stage1 = make_predictor(resolve_checkpoints([prior]), **unset)  # as packed: the options given are stage 2's
    if stage1.config.preprocess.cascade_margin is not None:  # it would need a prior of its own
        raise GliosegError(
            prior,
            "holds the models of a cascade stage, not of a cascade's first stage (which reads the modalities alone)",
            "pack the cascade again with `glioseg cv pack` (prior/ then holds its prior stage's models)",
        )
    logger.info("cascade: stage 1 %s, then stage 2 %s on the crop around stage 1's tumour", prior, folder)
    return CascadePredictor(stage2, StagePrior(stage1))
