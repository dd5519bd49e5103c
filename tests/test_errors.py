"""UserError keeps one clean paragraph, also after a DataLoader worker re-raised it."""

import pickle

from cityseg.errors import UserError, format_paths


def test_user_error_survives_pickling_between_processes():
    assert str(pickle.loads(pickle.dumps(UserError("a.png is corrupt")))) == "a.png is corrupt"


def test_worker_reraise_is_trimmed_to_the_original_paragraph():
    wrapped = (
        "Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1\ncityseg.errors.UserError: a.png is corrupt; rerun cityseg prepare'
    )
    assert str(UserError(wrapped)) == "a.png is corrupt; rerun cityseg prepare"


def test_format_paths_says_how_many_more():
    assert format_paths(["a", "b", "c"], limit=2) == "a, b (and 1 more)"
