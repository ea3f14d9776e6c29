"""The background queue (results/missing_trials.py) reads its cells from the pages' parameters."""
import importlib.util
from pathlib import Path

from ptqlib.app.report import section_parameters
from ptqlib.study.settings import trial_config

_spec = importlib.util.spec_from_file_location("missing_trials", Path(__file__).parents[1] / "results" / "missing_trials.py")
missing_trials = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(missing_trials)


def test_recon_queue_is_the_optimizer_pages_curve():
    page = section_parameters("optimizer")
    queue = missing_trials.recon_queue()
    assert len(queue) == len(page["curve_methods"]) * len(page["curve_iters"]) * page["curve_trials"]
    assert [q["iters"] for q in queue[:: len(queue) // len(page["curve_iters"])]] == sorted(page["curve_iters"], reverse=True)
    assert {q["optimizer"] for q in queue} == set(page["curve_methods"])
    configs = [trial_config(**q) for q in queue]
    assert {c.recon.variant for c in configs} == {"reference"}


def test_family_queue_covers_every_cell_of_the_family_page():
    page = section_parameters("family")
    queue = missing_trials.family_queue()
    cells = {tuple(sorted((k, v) for k, v in q.items() if k not in ("model", "seed"))) for q in queue}
    levels = 1 + sum(len(v) - 1 for v in page["factors"].values()) + len(page["mixed_bits"])
    assert len(cells) == levels == 11
    assert {q["model"] for q in queue} == set(page["models"])
    for model, stop in missing_trials.FAMILY_SEEDS.items():
        assert {q["seed"] for q in queue if q["model"] == model} == set(range(stop))
    assert all(trial_config(**q).calib.pool == "sample1000" for q in queue[:levels])
