"""Progress bars: text on a terminal, off where the report executes notebooks, and no tqdm
warning inside a kernel that lacks ipywidgets."""
import sys
import types
import warnings

import tqdm.std

from ptqlib import progress as progress_module
from ptqlib.progress import PROGRESS_ENV, progress_bar


def test_bars_draw_unless_turned_off(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert not progress_bar(range(3), file=sys.stderr).disable
    assert progress_bar(range(3), disable=True).disable
    monkeypatch.setenv(PROGRESS_ENV, "0")
    bar = progress_bar(range(3))
    assert bar.disable and list(bar) == [0, 1, 2]  # a silent bar still iterates


def test_a_kernel_without_ipywidgets_gets_the_text_bar_without_a_warning(monkeypatch):
    kernel = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # importing it raises ImportError
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = progress_bar(range(2), file=sys.stderr)
        assert type(bar) is tqdm.std.tqdm
        assert list(bar) == [0, 1]
    assert progress_module._in_kernel()


def test_callers_that_say_progress_false_draw_nothing(monkeypatch, capsys, tmp_path):
    import torch

    from ptqlib.quant.recon import ReconConfig, reconstruct
    from ptqlib.study.store import ResultsStore
    from ptqlib.study.sweep import run_sweep

    from .test_reconstruction import calibrated

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    run_sweep([], ResultsStore(tmp_path / "s.sqlite"), progress=False)
    _, qmodel, images = calibrated()
    reconstruct(qmodel, images, "qdrop", ReconConfig(iters=3, batch_size=4), progress=False)
    assert capsys.readouterr().err == ""
    run_sweep([], ResultsStore(tmp_path / "s.sqlite"), progress=True)  # the same call with a bar draws it
    assert "trials" in capsys.readouterr().err
    assert torch.isfinite(qmodel(images)).all()
