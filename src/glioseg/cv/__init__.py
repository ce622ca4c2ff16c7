"""Cross-validation as commands: train every fold, score out-of-fold, pack what to ship.

``glioseg cv train`` (:mod:`glioseg.cv.train`) trains the K folds of a recipe (one preset, or
several presets trained one after the other as stages) and predicts each fold's held-out cases
on their original grids; ``glioseg cv report`` (:mod:`glioseg.cv.report`) scores those
out-of-fold predictions and chooses post-processing nested (no case takes part in choosing
what is applied to it); ``glioseg cv pack`` (:mod:`glioseg.cv.pack`) writes a model folder
(fold models or the model trained on all cases, the chosen post-processing, checksums and a
model card) that ``glioseg predict --model`` runs.

The work folder (:mod:`glioseg.cv.workdir`) records the recipe and the dataset it was made
with; a later command with another recipe or dataset is refused.
"""
