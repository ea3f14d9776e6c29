"""Progress bars for long work, drawn one way everywhere in the library.

A bar is tqdm's text bar on standard error, or its widget inside a Jupyter kernel that has
ipywidgets. (``tqdm.auto`` would pick the widget in any kernel and, without ipywidgets, warn with
a local file path before falling back to text: noise in a notebook's saved outputs.) With
``PTQ_PROGRESS=0`` no bar is drawn: the report sets it for the notebooks it executes, whose
outputs are published.
"""
from __future__ import annotations

import os

PROGRESS_ENV = "PTQ_PROGRESS"


def bars_enabled() -> bool:
    """False where ``PTQ_PROGRESS`` is ``0``."""
    return os.environ.get(PROGRESS_ENV, "1") != "0"


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _bar_class():
    if _in_kernel():
        try:
            import ipywidgets  # noqa: F401  (the widget bar needs it)
            from tqdm.notebook import tqdm
            return tqdm
        except ImportError:
            pass
    from tqdm.std import tqdm
    return tqdm


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm bar over ``iterable`` (keyword arguments as tqdm's), silent where ``disable`` or
    where bars are off (:func:`bars_enabled`)."""
    return _bar_class()(iterable, disable=disable or not bars_enabled(), **kwargs)
