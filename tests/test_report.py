"""Section notebooks execute through papermill against a store made here; failures never publish."""
import json
import re
import sqlite3

import numpy as np
import papermill
import pytest
import torch

from ptqlib.study.calibset import CalibSpec
from ptqlib.models import CifarResNet
from ptqlib.quant.qmodel import QuantConfig
from ptqlib.app.report import VARIANTS, parse_value, run_section, run_sections, sections
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, factor_frame, factor_seconds, models_frame
from ptqlib.study.sweep import expand_grid, run_sweep
from ptqlib.study.settings import TrialConfig

from .conftest import randomize_bn


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("report")
    weights = root / "w.pt"
    torch.save(randomize_bn(CifarResNet(3, num_classes=3)).state_dict(), weights)
    base = TrialConfig("resnet20", f"folder:{tiny_data}", str(weights), QuantConfig(4, 4), CalibSpec(8))
    store = ResultsStore(root / "s.sqlite")
    run_sweep(expand_grid(base, {"noise": [0.0, 0.25]}, range(3)), store, progress=False)
    return store, base


def test_factor_frame_selects_one_factor_at_a_time(tiny_store):
    store, base = tiny_store
    cell = Cell("resnet20", base.dataset, calib_size=8, weights=base.weights)
    frame = factor_frame(store, cell, "noise", [0.0, 0.25], trials=2)
    assert frame.groupby("noise")["key"].nunique().to_dict() == {0.0: 2, 0.25: 2}
    assert len(frame) == 4 * 3  # 3 classes per trial
    assert factor_frame(store, Cell("resnet20", base.dataset, calib_size=8), "noise", [0.0], 2).empty
    both = models_frame(store, cell, ["resnet20", "resnet32"], "noise", [0.0, 0.25], trials=2)
    assert both.equals(frame) and both["acc"].dtype == float  # resnet32 has no trials: left out
    assert models_frame(store, cell, ["resnet32"], "noise", [0.0], 2).empty


def test_factor_seconds_are_the_medians_of_the_stored_timings(tiny_store):
    store, base = tiny_store
    cell = Cell("resnet20", base.dataset, calib_size=8, weights=base.weights)
    seconds = factor_seconds(store, cell, "noise", [0.0, 0.25, 0.5], trials=2).set_index("noise")
    assert list(seconds.index) == [0.0, 0.25]  # no trials at 0.5: left out
    with sqlite3.connect(store.path) as con:  # independent of the store's reader
        for noise in (0.0, 0.25):
            rows = con.execute("SELECT calib_s, eval_s FROM trials WHERE noise = ? AND seed < 2", (noise,)).fetchall()
            assert seconds.loc[noise, "trials"] == 2
            assert seconds.loc[noise, "calib_s"] == pytest.approx(float(np.median([r[0] for r in rows])))
            assert seconds.loc[noise, "eval_s"] == pytest.approx(float(np.median([r[1] for r in rows])))


def test_factor_seconds_time_a_cell_on_its_cpu_trials_where_it_has_any(tiny_store, tmp_path):
    import shutil

    store, base = tiny_store
    copy = tmp_path / "s.sqlite"
    shutil.copy(store.path, copy)
    with sqlite3.connect(copy) as con:  # seed 0 of noise 0 as if a GPU had run it, in a thousandth of the time
        con.execute("UPDATE trials SET device = 'cuda', calib_s = 0.001 WHERE noise = 0.0 AND seed = 0")
        cpu = con.execute("SELECT calib_s FROM trials WHERE noise = 0.0 AND seed = 1").fetchone()[0]
    cell = Cell("resnet20", base.dataset, calib_size=8, weights=base.weights)
    seconds = factor_seconds(ResultsStore(copy), cell, "noise", [0.0], trials=2).set_index("noise")
    assert seconds.loc[0.0, "trials"] == 2 and seconds.loc[0.0, "calib_s"] == pytest.approx(cpu)


@pytest.fixture(scope="module")
def pages(tiny_store, tmp_path_factory):
    """The noise section, its Lite0 variant and a section that fails, executed two at a time."""
    store, base = tiny_store
    params = {"store_path": str(store.path), "dataset": base.dataset, "weights": base.weights, "calib_size": 8,
              "levels": [0.0, 0.25], "trials": 3}
    out = tmp_path_factory.mktemp("pages")
    lines = []
    failed = run_sections([("noise", params),
                           ("noise_lite0", {**params, "model": "resnet20", "w_bits": 4, "a_bits": 4}),
                           ("reliability", {"store_path": str(out / "empty.sqlite")})], out, jobs=2,
                          log=lines.append)
    return out, failed, lines


def test_noise_section_renders_from_the_store(pages):
    out, failed, _ = pages
    assert "noise" not in failed
    cells = json.loads((out / "noise.ipynb").read_text())["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "trials per noise level: 0: 3, 0.25: 3" in text


def test_variant_runs_its_section_with_its_parameters_and_title(pages):
    out, failed, _ = pages
    assert "noise_lite0" not in failed
    cells = json.loads((out / "noise_lite0.ipynb").read_text())["cells"]
    assert "".join(cells[0]["source"]).startswith("# Noise in the calibration set: EfficientNet-Lite0 on ImageNet (10-class calibration pool)\n")
    injected = "".join(next(c for c in cells if "injected-parameters" in c["metadata"].get("tags", []))["source"])
    assert "levels = [0.0, 0.25]" in injected and 'model = "resnet20"' in injected
    assert VARIANTS["noise_lite0"].parameters["model"] == "efficientnet_lite0"


def test_a_failing_section_is_reported_and_not_published_while_the_others_are(pages):
    out, failed, lines = pages
    assert list(failed) == ["reliability"] and "(cell " in failed["reliability"], failed
    assert not (out / "reliability.ipynb").exists()
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["noise.ipynb", "noise_lite0.ipynb"]
    assert len(lines) == 3 and lines[-1].startswith("[3/3] ") and any("reliability: FAILED, " in x for x in lines)


def test_bad_runs_are_refused_before_any_kernel_starts(tmp_path, capsys):
    from ptqlib.app.report import main

    with pytest.raises(ValueError, match="jobs must be a whole number of at least 1, got 0"):
        run_sections([("noise", {})], tmp_path, jobs=0)
    with pytest.raises(ValueError, match="unknown section 'nope'"):
        run_sections([("noise", {}), ("nope", {})], tmp_path, jobs=2)
    with pytest.raises(ValueError, match="parameter 'trials' of section 'noise' expects an integer"):
        run_sections([("noise", {"trials": "x"})], tmp_path, jobs=2)
    for argv, said in ((["--jobs", "0"], "--jobs must be at least 1, got 0"), (["nope"], "unknown section 'nope'")):
        with pytest.raises(SystemExit):
            main(argv)
        assert said in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("[0, 0.5]") == [0, 0.5] and parse_value("resnet20") == "resnet20"


def test_unknown_section_is_refused():
    with pytest.raises(ValueError, match="unknown section 'nope'; choose one of"):
        run_section("nope")
    assert {"reliability", "noise", "models"} <= set(sections())


def test_papermill_reads_every_parameter_of_every_section(tmp_path):
    """A parameter papermill cannot read (``a, b = 1, 2``) is still overridden, but it warns
    "Passed unknown parameter" and `papermill --help-notebook` leaves it out."""
    import ast

    import jupytext

    from ptqlib.app.report import NOTEBOOKS

    known = {}
    for name in sections():
        notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        assigned = {t.id for node in ast.parse(cell.source).body for t in getattr(node, "targets", [])
                    for t in ast.walk(t) if isinstance(t, ast.Name)}
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(notebook, tmp_path / f"{name}.ipynb")
        known[name] = set(papermill.inspect_notebook(str(tmp_path / f"{name}.ipynb")))
        assert assigned == known[name], f"{name}: papermill does not read {sorted(assigned - known[name])}"
    for name, variant in VARIANTS.items():
        assert set(variant.parameters) <= known[variant.section], name


def test_section_parameters_are_checked_before_any_kernel_starts(capsys):
    from ptqlib.app.cli import main

    assert main(["section", "noise", "-p", "trials", "notanumber", "--no-build", "--output", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("ptq: error: parameter 'trials' of section 'noise' expects an integer (like 50), "
                   "got 'notanumber'")
    assert main(["section", "noise", "-p", "nosuch", "1", "--no-build", "--output", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptq: error: section 'noise' has no parameter 'nosuch'; its parameters: store_path")
    assert len(err.splitlines()) == 1


def test_parameter_types_follow_the_defaults():
    from ptqlib.app.report import check_parameters

    check_parameters("noise", {"trials": 3, "levels": [0.0, 0.1], "weights": "w.pt", "compute_missing": True})
    check_parameters("noise_lite0", {"trials": 3})  # a variant's parameters are its section's
    for bad in ({"trials": 2.5}, {"trials": True}, {"levels": "0.1"}, {"compute_missing": 1}):
        with pytest.raises(ValueError, match="expects"):
            check_parameters("noise", bad)


def test_sweep_needs_at_least_one_trial(capsys):
    from ptqlib.app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--model", "resnet20", "--data", "cifar10-jpeg", "--trials", "0"])
    assert exc.value.code == 2 and "--trials: must be at least 1, got 0" in capsys.readouterr().err


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, payload) chunks of a PNG file."""
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        chunks.append((kind, data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def test_rebuilding_a_section_on_the_same_store_gives_the_same_bytes(tiny_store, tmp_path):
    import base64

    from ptqlib.app.report import TABLES, rerun_command

    store, base = tiny_store
    params = {"store_path": str(store.path), "dataset": base.dataset, "weights": base.weights, "calib_size": 8,
              "levels": [0.0, 0.25], "trials": 3}
    first = run_section("noise", params, tmp_path).read_bytes()
    tables = {p.name: p.read_bytes() for p in (tmp_path / TABLES).glob("*.csv")}
    (tmp_path / TABLES / "noise-stale.csv").write_text("left by an earlier run\n")
    second = run_section("noise", params, tmp_path).read_bytes()
    assert first == second
    assert {p.name: p.read_bytes() for p in (tmp_path / TABLES).glob("*.csv")} == tables
    assert set(tables) == {"noise-worst_class.csv", "noise-drop_ci.csv"}

    text = first.decode()
    assert "papermill" not in text and "iopub" not in text and "noise.out.ipynb" not in text
    assert not re.search(r"\btmp[a-z0-9_]{8}\b", text)  # tempfile's folders, where papermill ran
    notebook = json.loads(text)
    assert "papermill" not in notebook["metadata"]
    cells = notebook["cells"]
    assert [c["id"] for c in cells] == [f"noise-{i}" for i in range(len(cells))]
    assert all("hide-input" in c["metadata"]["tags"] for c in cells if c["cell_type"] == "code")
    assert all(set(c["metadata"]) <= {"tags"} for c in cells)
    assert [c["execution_count"] for c in cells if c["cell_type"] == "code"] == list(
        range(1, 1 + sum(c["cell_type"] == "code" for c in cells)))
    rerun = "".join(cells[-1]["source"])
    assert rerun.startswith("## Rerun this page") and rerun_command("noise", params) in rerun
    for name in tables:
        assert f"[{name}](_static/tables/{name})" in rerun
    pngs = [base64.b64decode(o["data"]["image/png"]) for c in cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    assert pngs
    for png in pngs:  # no time stamp, no text chunk but matplotlib's name and version
        chunks = _png_chunks(png)
        assert b"tIME" not in {kind for kind, _ in chunks}
        assert [p.split(b"\0")[0] for kind, p in chunks if kind in (b"tEXt", b"iTXt", b"zTXt")] in ([], [b"Software"])


def test_rerun_command_names_the_parameters_that_differ_from_the_page_defaults():
    from ptqlib.app.report import parse_value, rerun_command

    assert rerun_command("noise") == "ptq section noise"
    assert rerun_command("noise", {"trials": 50, "model": "resnet20"}) == "ptq section noise"  # the defaults
    assert rerun_command("noise_lite0", {"model": "efficientnet_lite0", "trials": 3}) == \
        "ptq section noise_lite0 -p trials 3"
    command = rerun_command("noise", {"levels": [0.0, 0.5], "weights": "my weights.pt", "model": "3"})
    assert command == "ptq section noise -p levels '[0.0, 0.5]' -p weights 'my weights.pt' -p model ''\"'\"'3'\"'\"''"
    import shlex

    words = shlex.split(command)
    given = {words[i + 1]: parse_value(words[i + 2]) for i in range(3, len(words), 3)}
    assert given == {"levels": [0.0, 0.5], "weights": "my weights.pt", "model": "3"}


def test_publish_table_outside_a_build_only_displays(monkeypatch, capsys):
    import pandas as pd

    from ptqlib.app.report import publish_table

    monkeypatch.delenv("PTQ_REPORT_TABLES", raising=False)
    publish_table(pd.DataFrame({"a": [1]}), "t")
    assert "a" in capsys.readouterr().out


def test_the_pages_workflow_builds_with_the_readme_command_and_publishes_the_html():
    import yaml

    from ptqlib.app.report import ROOT

    readme = (ROOT / "README.md").read_text()
    assert "make setup report" in readme and ".github/workflows/book.yml" in readme
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert on["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    (job,) = workflow["jobs"].values()
    assert job["environment"]["name"] == "github-pages"
    steps = job["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    runs = [s.get("run", "").strip() for s in steps]
    build = runs.index("make setup report")
    upload = uses.index("actions/upload-pages-artifact")
    assert build < uses.index("actions/configure-pages") < upload < uses.index("actions/deploy-pages")
    assert steps[upload]["with"]["path"] == "_build/html"
    assert uses.index("actions/checkout") < build


def test_printed_output_split_by_the_kernel_is_merged():
    import nbformat

    from ptqlib.app.report import _merge_streams

    outs = [nbformat.v4.new_output("stream", name="stdout", text="a\n"),
            nbformat.v4.new_output("stream", name="stdout", text="b\n"),
            nbformat.v4.new_output("stream", name="stderr", text="w\n"),
            nbformat.v4.new_output("stream", name="stdout", text="c\n")]
    merged = _merge_streams(outs)
    assert [(o["name"], o["text"]) for o in merged] == [("stdout", "a\nb\n"), ("stderr", "w\n"), ("stdout", "c\n")]


def test_the_prose_shows_the_values_of_the_parameters_it_names_as_the_page_ran():
    import nbformat

    from ptqlib.app.report import PARAMETER_SHOWN, _finish, show_parameters

    values = {"iters": 2000, "variant": "joint", "levels": [1, 32], "series": {"x": "y" * PARAMETER_SHOWN}}
    text = ("Run **`iters` iterations** in the `variant` variant; `iters` again, ``iters``, `iters_x`, "
            "`levels`, `series`, `other`.\n```python\n`levels`\n```\nafter: `levels`")
    assert show_parameters(text, values) == (
        "Run **`iters=2000` iterations** in the `variant='joint'` variant; `iters` again, ``iters``, `iters_x`, "
        "`levels=[1, 32]`, `series`, `other`.\n```python\n`levels`\n```\nafter: `levels`")
    assert show_parameters(text, {}) == text
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\nwith `iters`"),
                                               nbformat.v4.new_code_cell("x = 1"),
                                               nbformat.v4.new_markdown_cell("again `iters` and `variant`")])
    _finish(notebook, "t", "ptq section t -p iters 2000", [], values)
    assert [c.source for c in notebook.cells if c.cell_type == "markdown"][:2] == [
        "# T\nwith `iters=2000`", "again `iters=2000` and `variant='joint'`"]  # first mention in each cell
    assert "ptq section t -p iters 2000" in notebook.cells[-1].source

def test_a_section_that_computes_trials_publishes_no_progress_bar(tiny_store, tmp_path):
    import shutil

    store, base = tiny_store
    copy = tmp_path / "s.sqlite"
    shutil.copy(store.path, copy)
    params = {"store_path": str(copy), "dataset": base.dataset, "weights": base.weights, "calib_size": 8,
              "levels": [0.0, 0.5], "trials": 2, "compute_missing": True}  # noise 0.5 is not stored: 2 trials run
    out = run_section("noise", params, tmp_path / "book")
    outputs = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])]
    assert "trials per noise level: 0: 2, 0.5: 2" in "".join("".join(o.get("text", "")) for o in outputs)
    assert not [o for o in outputs if o.get("name") == "stderr"], "a progress bar or warning was published"
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]  # nor a widget
    assert ResultsStore(copy).existing_keys() > store.existing_keys()


def test_optimizer_study_reads_the_optimizer_sections_parameters(tmp_path):
    from ptqlib.app.report import optimizer_study, section_parameters, study_setup

    page = section_parameters("optimizer")
    cell, methods = study_setup(page)
    spec = page["curve_series"][page["study_curve"]]
    assert cell.model == page["model"] and cell.calib_size == page["calib_size"] and cell.variant == spec["variant"]
    assert methods == list(spec.get("methods", page["curve_methods"]))
    study = optimizer_study(ResultsStore(tmp_path / "empty.sqlite"))
    assert study.count != study.count and "none yet" in study.line and (study.cell, study.methods) == (cell, methods)


def test_study_count_knows_its_cell_with_the_pool_resolved(tmp_path):
    from ptqlib.app.report import optimizer_study

    study = optimizer_study(ResultsStore(tmp_path / "empty.sqlite"))
    cell = study.cell
    same = dict(model=cell.model, dataset=cell.dataset, w_bits=cell.w_bits, calib_size=cell.calib_size)
    assert study.decided_on(**same) and study.decided_on(**same, pool=None)
    assert study.decided_on(**same, pool=cell.pool or "train")  # CIFAR's default pool, named
    assert not study.decided_on(**{**same, "w_bits": cell.w_bits + 1})
    assert not study.decided_on(**{**same, "calib_size": cell.calib_size // 2})
    with pytest.raises(ValueError, match="no setting 'bits'"):
        study.decided_on(bits=4)


def test_study_count_gives_the_claim_4_design_at_the_count_only_on_its_own_cell(tmp_path):
    from ptqlib.analysis.verdicts import Design
    from ptqlib.app.report import optimizer_study

    study = optimizer_study(ResultsStore(tmp_path / "empty.sqlite"))
    cell = study.cell
    same = dict(model=cell.model, dataset=cell.dataset, w_bits=cell.w_bits, calib_size=cell.calib_size)
    assert study.design_on(20, **same).startswith("no study-wide iteration count yet")
    decided = study._replace(count=20000.0)
    design = decided.design_on(20, **same)
    assert isinstance(design, Design) and design.recon_iters == 20000 and design.trials == 20
    assert design.recon_variant == cell.variant and design.methods == tuple(study.methods)
    assert (design.cell.model, design.cell.w_bits, design.recon_size) == (cell.model, cell.w_bits, cell.calib_size)
    other = decided.design_on(20, **{**same, "w_bits": 2})
    assert other.startswith(f"the count was decided on {cell.model} W{cell.w_bits}A{cell.a_bits}")
