"""The one compiled part of cityseg: PNG row unfiltering for fast label decoding (src/cityseg/data/_pngrows.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the install still
succeeds and cityseg.data.pngdecode decodes with libpng (imagecodecs) instead, ~3x slower, same values.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cityseg.data._pngrows", ["src/cityseg/data/_pngrows.c"], optional=True)])
