"""What this machine offers a run: how many cores the workers may use.

A leaf: the CLI reads it to print its defaults, so it must import nothing heavy.
"""

from __future__ import annotations

import os


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
