"""Stage 2 of the pipeline: configs and recipes, the model, the training loop, the run folder, cross-validation.
Imports `cityseg.data` and the shared leaves; never prediction, evaluation, report or cli."""
