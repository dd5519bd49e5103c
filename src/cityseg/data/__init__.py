"""Stage 1 of the pipeline: the Cityscapes files on disk and what a training step reads from them.

Discovery of frames (`frames`), label conversion (`prepare`), the training-time transforms and
augmentations, the decoded-image training cache (`cache`, on the shared `cache_core`) and downloading.
Imports only the shared leaves at the top of the package.
"""
