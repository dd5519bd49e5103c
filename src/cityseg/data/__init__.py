"""Stage 1 of the pipeline: the Cityscapes files on disk and what a training step reads from them: finding frames
(`frames`), label conversion (`prepare`), transforms and augmentations, the decoded-image cache, downloading.
Imports only the shared leaves at the top of the package."""
