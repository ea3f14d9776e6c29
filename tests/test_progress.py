"""Progress bars: text on a terminal, off where the report executes notebooks, and no tqdm
warning inside a kernel that lacks ipywidgets."""
import sys
import types
import warnings

import tqdm.std

from ptqlib import progress as progress_module
from ptqlib.progress import PROGRESS_ENV, progress


def test_bars_draw_unless_turned_off(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert not progress(range(3), file=sys.stderr).disable
    assert progress(range(3), disable=True).disable
    monkeypatch.setenv(PROGRESS_ENV, "0")
    bar = progress(range(3))
    assert bar.disable and list(bar) == [0, 1, 2]  # a silent bar still iterates


def test_a_kernel_without_ipywidgets_gets_the_text_bar_without_a_warning(monkeypatch):
    kernel = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # importing it raises ImportError
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = progress(range(2), file=sys.stderr)
        assert type(bar) is tqdm.std.tqdm
        assert list(bar) == [0, 1]
    assert progress_module._in_kernel()
