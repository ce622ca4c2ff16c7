"""The input cache of a cascade stage: every case at 1 mm on the crop around its prior's out-of-fold tumour.

``WORK/<stage>/cache-<fingerprint>/`` holds, per case, the entry :mod:`glioseg.data.cache` reads (image: the
modalities and the prior's WT/TC/ET channels on the crop; label: the 1 mm labels of the crop). The prior of
every case is ``WORK/<prior>/pred/<case>.nii.gz``, the label map of the fold model of the prior stage that
never saw the case (nnU-Net's cascade does the same), for the fold models and the all-cases model alike. A
case whose prior holds no tumour is recorded as dropped (``kept: false``): no stage-2 crop, it trains on
nothing and its stage-1 result stands. An entry is made again when its prior file is newer than it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glioseg.cv.recipe import Stage
from glioseg.cv.workdir import WorkFolder
from glioseg.data.discovery import Case
from glioseg.errors import GliosegError

logger = logging.getLogger(__name__)


def build_cascade_cache(work: WorkFolder, stage: Stage, cases: Sequence[Case], *, progress: bool = False) -> None:
    """Fill the cascade stage's cache from its prior's out-of-fold label maps.

    Raises:
        GliosegError: a prior label map is missing (named, with the command that writes it), unreadable or on
            another grid than its case; nothing is written before every prior file is found.
    """
    from glioseg.cv.workdir import stage_cache
    from glioseg.data.cache import cache_lock

    assert stage.prior is not None
    pred = work.pred_dir(stage.prior)
    missing = [case.case_id for case in cases if not (pred / f"{case.case_id}.nii.gz").is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise GliosegError(
            pred / f"{missing[0]}.nii.gz",
            f"is missing{more}: cascade stage {stage.name} needs stage {stage.prior}'s out-of-fold label map of "
            "every case",
            f"train every fold of the stages up to {stage.prior} first (`glioseg cv train` of every fold)",
        )
    cache = stage_cache(work.path, stage)
    cache.mkdir(parents=True, exist_ok=True)
    with cache_lock(cache):  # the folds' and the all-cases model's commands may fill it at once
        dropped = _fill_cascade_cache(cache, pred, stage, cases, progress)
    logger.info(
        "%s: cascade input of %d cases in %s (%d without a predicted tumour: stage %s's result stands for them)",
        stage.name, len(cases), cache, dropped, stage.prior,
    )


def _fill_cascade_cache(cache: Path, pred: Path, stage: Stage, cases: Sequence[Case], progress: bool) -> int:
    """Write the cascade input of every case whose entry is older than its prior label map; returns how many cases
    have no predicted tumour."""
    from tqdm.auto import tqdm

    from glioseg.data.cache import current_cache_entry, save_cached
    from glioseg.data.cascade import cascade_input, read_prior
    from glioseg.data.discovery import load_case
    from glioseg.data.preprocess import preprocess_loaded

    config = stage.config.preprocess
    assert config.cascade_margin is not None and stage.prior is not None
    dropped = 0
    for case in tqdm(cases, desc=f"cascade input {stage.name}", unit="case", disable=not progress):
        prior_path = pred / f"{case.case_id}.nii.gz"
        meta = current_cache_entry(cache, case, config)
        if meta is not None and (cache / f"{case.case_id}.json").stat().st_mtime_ns >= prior_path.stat().st_mtime_ns:
            dropped += not meta.get("kept", True)
            continue
        loaded = load_case(case, config.modalities, with_label=True)
        prior = read_prior(prior_path, case, loaded.shape, loaded.affine, stage.prior)
        pre = preprocess_loaded(loaded, config)
        cut = cascade_input(pre, prior, config.cascade_margin)
        if cut is None:
            dropped += 1
            cut = pre.__class__(case.case_id, np.zeros((0, 0, 0, 0), np.float32), None, pre.crop, kept=False)
        save_cached(cache, case, cut, config)
    return dropped
