"""Synthetic Cityscapes: street scenes in the real dataset's layout, naming and label formats.

Tests, the demo and benchmarks need data without the real (login-protected, 11 GB) dataset.
`write_dataset` draws perspective street scenes with all 19 evaluation classes in every frame,
writes the official polygon JSON, rasterises it with cityscapesscripts, and paints a camera
image from the labels. Same parameters, same bytes.
"""

from cityseg.synthetic.dataset import CITY_NAMES, GENERATOR_VERSION, MARKER, MIN_SIZE, city_names, write_dataset

__all__ = ["CITY_NAMES", "GENERATOR_VERSION", "MARKER", "MIN_SIZE", "city_names", "write_dataset"]
