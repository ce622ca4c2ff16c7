"""The shipped models without ``--model``: the main model, and the missing-modality model for incomplete cases.

The package ships two models (``glioseg/weights/``, see its ``MODEL_CARD.md``):

* the **main model** (``all.pt``, recipe D-bn trained on all 24 shared cases), trained on all four
  modalities, used for every case that has all of them;
* the **missing-modality model** (``glioseg/weights/missing_modalities/``, a ``glioseg cv pack``
  folder of a model trained with modality dropout), used for a case that lacks some of them.

:class:`ShippedModels` gives ``glioseg predict`` (without ``--model``) the interface of one
:class:`~glioseg.inference.predictor.Predictor` (``usable_cases``, ``predict_cases``) and sends
each case to the model that fits it. The missing-modality model is loaded only when a case needs
it. The log line of every case names the model and the modalities used
(``CASE: model the shipped missing-modality model (missing_modalities/fold0.pt); modalities used:
flair, t1ce (absent: t1, t2, given as zero channels)``), and the label map's header stamp
(``descrip``: ``glioseg model=<16 hex> ... inputs=flair,t1ce``) holds the weights' checksum and the
modalities, and its ``aux_file`` field the model's tag (:data:`MAIN_TAG`, :data:`MISSING_TAG`;
:func:`~glioseg.data.modalities.stamped_model` reads it). ``--model`` bypasses all this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from glioseg.checksums import shipped_checkpoints, shipped_missing_checkpoints
from glioseg.data.discovery import Case
from glioseg.data.modalities import SHIPPED_TAGS, stamped_model  # noqa: F401  (stamped_model: re-exported)
from glioseg.errors import GliosegError
from glioseg.inference.predictor import PredictionReport, Predictor

logger = logging.getLogger(__name__)

MAIN_NAME = "the shipped model"
MISSING_NAME = "the shipped missing-modality model"
MAIN_TAG, MISSING_TAG = SHIPPED_TAGS
"""Header field ``aux_file`` of a label map written by the main shipped model, and by the missing-modality model."""


def model_name(base: str, members: Sequence[Path]) -> str:
    """``the shipped model (all.pt)``: a model's name in the log."""
    names = [m.name if m.parent.name == "weights" else f"{m.parent.name}/{m.name}" for m in members]
    return f"{base} ({', '.join(names)})"


class ShippedModels:
    """The main shipped model for complete cases, the missing-modality model for the others.

    Args:
        main: the predictor of the main shipped model.
        load_missing: builds the predictor of the missing-modality model (called once, when the
            first case lacking a modality is met); ``None`` when none is shipped, and such a case
            is then refused by the main model (one line).
    """

    def __init__(self, main: Predictor, load_missing: Callable[[], Predictor] | None) -> None:
        self.main = main
        self._load_missing = load_missing
        self._missing: Predictor | None = None

    @property
    def missing(self) -> Predictor | None:
        """The missing-modality predictor (loaded on first use), or ``None`` when none is shipped."""
        if self._missing is None and self._load_missing is not None:
            self._missing = self._load_missing()
        return self._missing

    def complete(self, case: Case) -> bool:
        """Whether ``case`` has every modality of the main model."""
        return all(m in case.images for m in self.main.config.preprocess.modalities)

    def predictor_for(self, case: Case) -> Predictor:
        """The model that segments ``case``: the main one if the case is complete or no second model is shipped."""
        if self.complete(case) or self._load_missing is None:
            return self.main
        missing = self.missing
        assert missing is not None
        return missing

    def usable_cases(self, cases: Sequence[Case]) -> tuple[list[Case], list[GliosegError]]:
        """``cases`` split into those a shipped model can segment and one error per other case (in order)."""
        usable: list[Case] = []
        refused: list[GliosegError] = []
        for case in cases:
            try:
                self.predictor_for(case).modalities_of(case)
            except GliosegError as exc:
                refused.append(exc)
            else:
                usable.append(case)
        return usable, refused

    def predict_cases(self, cases: Sequence[Case], out_dir: str | Path, **options: object) -> PredictionReport:
        """Predict the complete cases with the main model and the others with the missing-modality model.

        ``options`` are :meth:`Predictor.predict_cases`'s. The reports of the two runs are merged.
        """
        groups: dict[int, tuple[Predictor, list[Case]]] = {}
        for case in cases:
            predictor = self.predictor_for(case)
            groups.setdefault(id(predictor), (predictor, []))[1].append(case)
        if len(groups) > 1 or any(p is not self.main for p, _ in groups.values()):
            logger.info(
                "no --model: %s",
                "; ".join(f"{len(group)} case(s) with {p.name or 'a model'}" for p, group in groups.values()),
            )
        merged = PredictionReport()
        for predictor, group in groups.values():
            report = predictor.predict_cases(group, out_dir, **options)  # type: ignore[arg-type]
            merged.written += report.written
            merged.skipped += report.skipped
            merged.redone += report.redone
            merged.failed.update(report.failed)
            merged.timings.update(report.timings)
        return merged


def shipped_models(main: Predictor, make_predictor: Callable[[list[Path]], Predictor]) -> Predictor | ShippedModels:
    """``main`` (the main shipped model's predictor) paired with the missing-modality model, if one is shipped.

    Args:
        main: the predictor of :func:`~glioseg.checksums.shipped_checkpoints`.
        make_predictor: builds a predictor from checkpoints with ``glioseg predict``'s settings.

    Returns:
        ``main`` itself when no missing-modality model is shipped, else a :class:`ShippedModels`;
        either way the predictors carry the models' names for the log.

    Raises:
        GliosegError: the missing-modality model's folder is damaged (a member missing or failing its checksum).
    """
    main.name, main.tag = model_name(MAIN_NAME, shipped_checkpoints()), MAIN_TAG
    members = shipped_missing_checkpoints()
    if not members:
        return main

    def load_missing() -> Predictor:
        predictor = make_predictor(members)
        predictor.name, predictor.tag = model_name(MISSING_NAME, members), MISSING_TAG
        return predictor

    return ShippedModels(main, load_missing)
