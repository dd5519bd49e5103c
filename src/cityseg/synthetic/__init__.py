"""Synthetic Cityscapes in the real layout, names and label formats (tests, demo, benchmarks): street scenes with all
19 classes, official polygon JSON rasterised by cityscapesscripts, a painted photo. Same parameters, same bytes."""

from cityseg.synthetic.dataset import CITY_NAMES, GENERATOR_VERSION, MARKER, MIN_SIZE, city_names, write_dataset

__all__ = ["CITY_NAMES", "GENERATOR_VERSION", "MARKER", "MIN_SIZE", "city_names", "write_dataset"]
