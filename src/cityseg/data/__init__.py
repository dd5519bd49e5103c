"""Stage 1 of the pipeline: the Cityscapes files on disk and what a training step reads from them (frames, label
preparation, transforms and augmentations, the decoded-image cache, download); imports only the shared leaves."""
