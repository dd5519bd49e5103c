"""Synthetic Cityscapes in the real dataset's layout, naming and label formats, for tests, the demo and benchmarks:
`write_dataset` draws street scenes with all 19 classes in every frame, writes the official polygon JSON, rasterises
it with cityscapesscripts and paints a camera image from the labels. Same parameters, same bytes.
"""

from cityseg.synthetic.dataset import CITY_NAMES, GENERATOR_VERSION, MARKER, MIN_SIZE, city_names, write_dataset

__all__ = ["CITY_NAMES", "GENERATOR_VERSION", "MARKER", "MIN_SIZE", "city_names", "write_dataset"]
