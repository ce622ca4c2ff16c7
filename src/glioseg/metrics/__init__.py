"""Segmentation metrics: pure functions per metric, a per-case table, and an accumulator.

Binary metrics take two boolean masks of the same shape (any number of dimensions), the
prediction first: :func:`dice`, :func:`iou`, :func:`sensitivity`, :func:`specificity` and
:func:`hd95` (millimetres, using the voxel spacing). :func:`case_metrics` computes all of them
for the BraTS regions WT, TC and ET of two label maps, plus the voxel accuracy;
:class:`MetricAccumulator` summarises many cases. :func:`paper_iou` is the paper's
training-time IoU, in torch (its accuracy is :func:`accuracy`: argmax agreement per voxel).

Empty masks follow the BraTS 2023 evaluation toolkit (``get_sensitivity_and_specificity`` and
the "full" Dice/HD95 of rachitsaluja/BraTS-2023-Metrics), with the image diagonal for HD95:

====================================  ======  =====  ===========  ===========  ==========
prediction / reference                Dice    IoU    sensitivity  specificity  HD95 (mm)
====================================  ======  =====  ===========  ===========  ==========
both empty                            1       1      1            formula      0
reference empty, prediction not       0       0      0            formula      373.13
prediction empty, reference not       0       0      0 (formula)  formula      373.13
====================================  ======  =====  ===========  ===========  ==========

"formula" is TN / (TN + FP). Sensitivity TP / (TP + FN) is undefined for an empty
reference; as the BraTS 2023 toolkit (``tp / (tp + fn + eps)``, set to 1 when both are empty)
it is 1 when the prediction is empty too and 0 otherwise. Specificity mirrors it on the
complements: when the reference has no negative voxel at all it is 1 if the prediction has
none either, else 0 (the BraTS 2023 toolkit would give 0 in both cases; such a volume never
occurs in brain MRI). 373.13 mm is the diagonal of the 240 x 240 x 155 mm BraTS volume,
sqrt(240^2 + 240^2 + 155^2) (the BraTS 2023 toolkit rounds it to 374).

Three definitions of HD95 circulate under one name (:data:`HD95_DEFINITIONS`); glioseg names
the one behind every figure. All measure between mask surfaces, in mm, using the spacing:

* ``"pooled"`` (:func:`hd95`, the legacy HD95 of :func:`case_metrics`): MedPy's ``hd95``, as the
  BraTS 2018-2021 organisers and the ``brats-evaluation`` package. The surface of a mask is the
  mask minus its binary erosion with the face-connected (6-neighbour in 3D) structure, voxels
  outside the array counting as background; distances are Euclidean between voxel centres;
  HD95 is one 95th percentile (numpy's linear interpolation) of both directions pooled.
* ``"max-directed"`` (:func:`hd95_max_directed`): the larger of the two directed 95th
  percentiles over the same surfaces, as MONAI's ``compute_hausdorff_distance(percentile=95)``.
* ``"surface-area"`` (:func:`hd95_surface_area`, the lesion-wise HD95): DeepMind's
  ``surface_distance`` robust Hausdorff distance, surface elements weighted by their area, as
  the BraTS 2023+ organisers' code.

Lesion-wise scores (BraTS 2023+: :func:`lesion_wise`, rule sets in :data:`SCORING_RULES`) score
each reference lesion separately and count false-positive and missed lesions; see
:func:`lesion_wise` for the exact procedure, which follows the organisers' code.
"""

from glioseg.labels import region_masks  # re-exported: callers import it from here
from glioseg.metrics.distance import (
    HD95_DEFINITIONS,
    HD95_ONE_EMPTY_MM,
    LEGACY_HD95,
    hd95,
    hd95_max_directed,
    hd95_surface_area,
)
from glioseg.metrics.lesionwise import (
    LESION_METRIC_KEYS,
    LESION_METRICS,
    LESIONWISE_HD95,
    SCORING_RULES,
    LesionScores,
    ScoringRules,
    get_rules,
    lesion_wise,
)
from glioseg.metrics.overlap import accuracy, dice, iou, paper_iou, sensitivity, specificity
from glioseg.metrics.tables import METRIC_KEYS, REGION_METRICS, STATISTICS, MetricAccumulator, case_metrics

__all__ = [
    "HD95_DEFINITIONS", "HD95_ONE_EMPTY_MM", "LEGACY_HD95", "LESIONWISE_HD95", "LESION_METRICS", "LESION_METRIC_KEYS",
    "METRIC_KEYS", "REGION_METRICS", "SCORING_RULES", "STATISTICS", "LesionScores", "MetricAccumulator", "ScoringRules",
    "accuracy", "case_metrics", "dice", "get_rules", "hd95", "hd95_max_directed", "hd95_surface_area", "iou",
    "lesion_wise", "paper_iou", "region_masks", "sensitivity", "specificity",
]
