"""Stage 3 of the pipeline: a trained model's label maps for a split or for photos, exports and submissions."""
