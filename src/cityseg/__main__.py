"""`python -m cityseg` runs the same CLI as the `cityseg` console script."""

import sys

from cityseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
