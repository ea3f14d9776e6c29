"""Executes the report's section notebooks with papermill, into ``book/``.

The sources are jupytext percent-format files in ``notebooks/`` with a cell tagged
``parameters``. Each is executed into a temporary notebook first; only a notebook that ran to
the end replaces the published one in ``book/``, so a failing section fails the command and
never reaches the book.

    python -m ptqlib.app.report                       # every section, default parameters
    python -m ptqlib.app.report --jobs 2              # the same, two sections at a time
    ptq section first_look -p w_bits 4            # one section with new parameters
    ptq section noise_lite0                       # a variant: the noise section on EfficientNet-Lite0

A *variant* publishes a section a second time, under its own name and title, with other
parameters (``VARIANTS``): the factor sections again on ImageNet with EfficientNet-Lite0.

A published notebook is written for the reader and for version control: the prose shows the
value of each parameter it names, as the page ran it (``show_parameters``), every code input is
collapsed behind a toggle (the ``hide-input`` tag), a last cell gives the ``ptq section``
command that reruns the page and links its tables as CSV (``publish_table``), and executing a
section again on the same store and code gives the same bytes (cell ids derived from the
section name, no papermill timestamps, durations or temporary paths).
"""
from __future__ import annotations

import argparse
import ast
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ptqlib.progress import PROGRESS_ENV

if TYPE_CHECKING:
    import pandas as pd

    from ptqlib.study.settings import Cell
    from ptqlib.study.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"
TABLES = Path("_static") / "tables"  # beside the pages; Sphinx copies _static into the HTML
# Set while ``run_section`` executes a notebook, read by ``publish_table`` in its kernel.
_TABLES_ENV, _SECTION_ENV = "PTQ_REPORT_TABLES", "PTQ_REPORT_SECTION"
FIGURES = Path("_static") / "figures"  # figures a page shows by reference (publish_figure)
_FIGURES_ENV = "PTQ_REPORT_FIGURES"


@dataclass(frozen=True)
class Variant:
    section: str  # the notebook in notebooks/
    title: str  # appended to the section's title
    parameters: dict


# the Lite0 pages show the cells calibrated from the 10-class pool (nette-train), where its 50 trials are
_LITE0 = {"model": "efficientnet_lite0", "dataset": "imagenet-val10", "pool": "train"}
_LITE0_CELL = {**_LITE0, "w_bits": 6, "a_bits": 6}  # W6A6: where W8A8 was seen to lose next to nothing (bitwidth_lite0)
_LITE0_TITLE = "EfficientNet-Lite0 on ImageNet (10-class calibration pool)"
_NETTE_BIAS = ["n01440764", "n02979186", "n03028079", "n03445777"]  # tench, cassette player, church, golf ball
VARIANTS: dict[str, Variant] = {
    "reliability_lite0": Variant("reliability", _LITE0_TITLE, _LITE0_CELL),
    "noise_lite0": Variant("noise", _LITE0_TITLE, _LITE0_CELL),
    # 100 pool images a class: a 50 % bias needs about 64 of one class among 128 images, 128 among 256
    "bias_lite0": Variant("bias", _LITE0_TITLE, {**_LITE0_CELL, "bias_classes": _NETTE_BIAS, "calib_size": 128}),
    # the calibration pool (nette-train) holds 1000 images
    "calib_size_lite0": Variant("calib_size", _LITE0_TITLE, {**_LITE0_CELL, "levels": [1, 32, 256, 1000]}),
    "bitwidth_lite0": Variant("bitwidth", _LITE0_TITLE, {**_LITE0, "levels": [8, 6]}),
    "metric_lite0": Variant("metric", _LITE0_TITLE, _LITE0_CELL),
    "protect_lite0": Variant("protect", _LITE0_TITLE, {
        **_LITE0_CELL, "recon_calib_size": 1000,
        "robustness_file": "results/robustness/efficientnet_lite0-w6a6-mse-256.json"}),
    "conclusions_lite0": Variant("conclusions", _LITE0_TITLE, {**_LITE0_CELL, "bias_classes": _NETTE_BIAS,
                                                               "calib_sizes": [32, 256, 1000], "bias_calib_size": 128,
                                                               "bit_widths": [8, 6], "compare": ["efficientnet_lite0"],
                                                               "compare_imagenet": []}),
}


def sections() -> list[str]:
    """Section names, in the order of ``notebooks/*.py``."""
    return sorted(p.stem for p in NOTEBOOKS.glob("*.py"))


def published() -> list[str]:
    """Every page the report executes: the sections, then the variants."""
    return [*sections(), *VARIANTS]


def parse_value(text: str):
    """``-p KEY VALUE``: a Python literal when it is one (``3``, ``[0, 0.1]``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def section_parameters(name: str) -> dict:
    """The parameters cell of section (or variant) ``name``: each name with its default value."""
    import jupytext

    section = VARIANTS[name].section if name in VARIANTS else name
    notebook = jupytext.read(NOTEBOOKS / f"{section}.py")
    cell = next((c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return {}
    defaults = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def study_setup(page: dict) -> tuple[Cell, list[str]]:
    """The optimizer section's study curve, from its parameters ``page``: the cell its iteration
    count is decided on (the configuration the study's reconstruction cells are rerun in) and its
    methods."""
    from ptqlib.analysis.cells import curve_cell
    from ptqlib.study.settings import Cell

    fields = ("model", "dataset", "w_bits", "a_bits", "metric", "calib_size", "pool", "weights")
    spec = page["curve_series"][page["study_curve"]]
    return curve_cell(Cell(**{k: page[k] for k in fields}), spec), list(spec.get("methods", page["curve_methods"]))


class StudyCount(NamedTuple):
    """The optimizer section's study-wide iteration count (:func:`optimizer_study`)."""

    count: float  # NaN while undecided
    line: str  # why
    curve: pd.DataFrame  # the iteration curve it is decided on
    cell: Cell  # the curve's cell: the configuration the study's reconstruction cells are rerun in
    methods: list[str]

    def decided_on(self, **settings) -> bool:
        """Whether the count was decided on the cell ``settings`` name (a page's ``model``,
        ``dataset``, ``pool``, ...): each equal to the curve cell's, a pool of None read as the
        dataset's default pool (the same trials)."""
        from ptqlib.data import default_pool

        def resolved(name, value, dataset):
            return default_pool(dataset) if name == "pool" and value is None else value

        unknown = sorted(k for k in settings if not hasattr(self.cell, k))
        if unknown:
            raise ValueError(f"a cell has no setting {unknown[0]!r}")
        return all(resolved(k, v, settings.get("dataset", self.cell.dataset))
                   == resolved(k, getattr(self.cell, k), self.cell.dataset) for k, v in settings.items())

    def design_on(self, trials: int, **settings):
        """The claim-4 design (:class:`ptqlib.analysis.verdicts.Design`, up to ``trials`` seeds)
        at the count, on the curve's cell, for a page whose cell ``settings`` name; or, where
        there is no count yet or the page's cell is another, a line saying so instead."""
        from ptqlib.analysis.verdicts import rerun_designs

        if not math.isfinite(self.count):  # NaN while undecided
            return "no study-wide iteration count yet: claim 4 is tested at the page's count only"
        if not self.decided_on(**settings):
            c = self.cell
            return (f"the count was decided on {c.model} W{c.w_bits}A{c.a_bits} on {c.dataset} ({c.calib_size} "
                    "images), not this page's cell; the optimizer section tests claim 4 at it on that cell and on "
                    "its rerun cells")
        return rerun_designs(self.cell, self.methods, int(self.count), {}, trials, trials)[0][1]


def optimizer_study(store: ResultsStore) -> StudyCount:
    """The optimizer section's study-wide iteration count on ``store``, as its parameters declare
    it (:func:`ptqlib.analysis.cells.study_count` on :func:`study_setup`'s cell and methods)."""
    from ptqlib.analysis.cells import study_count

    page = section_parameters("optimizer")
    cell, methods = study_setup(page)
    count, line, curve = study_count(store, cell, methods, page["curve_iters"], page["curve_trials"],
                                     page["target_iters"], page["choice_margin"], page["choice_alpha"])
    return StudyCount(count, line, curve, cell, methods)


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a dict", tuple: "a tuple"}.get(type(value), type(value).__name__)


def check_parameters(name: str, parameters: dict) -> None:
    """Refuse, before any kernel starts, a parameter the section does not have or a value of
    another type than its default's (an integer passes for a number; a default of None takes
    anything)."""
    defaults = section_parameters(name)
    for key, value in parameters.items():
        if key not in defaults:
            raise ValueError(f"section {name!r} has no parameter {key!r}; its parameters: {', '.join(defaults)}")
        default = defaults[key]
        if default is None:
            continue
        ok = isinstance(value, type(default)) and (isinstance(value, bool) == isinstance(default, bool))
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(f"parameter {key!r} of section {name!r} expects {_type_name(default)} "
                             f"(like {default!r}), got {value!r}")


def check_run(name: str, parameters: dict | None = None) -> None:
    """Refuse, before any kernel starts, a section (or variant) name the report does not have, or
    a parameter :func:`check_parameters` refuses."""
    if name not in published():
        raise ValueError(f"unknown section {name!r}; choose one of {', '.join(published())}")
    check_parameters(name, parameters or {})


def run_section(name: str, parameters: dict | None = None, output_dir: Path | None = None) -> Path:
    """Execute section (or variant) ``name`` into ``output_dir/name.ipynb``; ``parameters``
    override the notebook's (and, for a variant, the variant's). The tables the notebook
    publishes land in ``output_dir/_static/tables/name-*.csv``, replacing the section's
    earlier ones, only once the notebook ran to the end."""
    import jupytext
    import nbformat
    import papermill

    check_run(name, parameters)
    given = dict(parameters or {})
    variant = VARIANTS.get(name)
    if variant is not None:
        parameters = {**variant.parameters, **given}
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    notebook = jupytext.read(NOTEBOOKS / f"{variant.section if variant else name}.py")
    if variant is not None:
        _retitle(notebook, variant.title)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    output_dir = output_dir or BOOK
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source, executed = Path(tmp) / f"{name}.ipynb", Path(tmp) / f"{name}.out.ipynb"
        tables = Path(tmp) / "tables"
        tables.mkdir()
        jupytext.write(notebook, source)
        saved = {key: os.environ.get(key) for key in (_TABLES_ENV, _SECTION_ENV, _FIGURES_ENV, PROGRESS_ENV)}
        os.environ.update({_TABLES_ENV: str(tables), _SECTION_ENV: name, _FIGURES_ENV: str(output_dir / FIGURES),
                           PROGRESS_ENV: "0"})  # the kernel inherits these; no progress bars in published outputs
        try:
            papermill.execute_notebook(str(source), str(executed), parameters=parameters or {},
                                       cwd=str(ROOT), kernel_name="python3",
                                       progress_bar=sys.stderr.isatty())  # a bar over the cells, on a terminal
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        csvs = sorted(tables.glob("*.csv"))
        result = nbformat.read(executed, as_version=4)
        _finish(result, name, rerun_command(name, given), [f"{TABLES.as_posix()}/{c.name}" for c in csvs],
                {**section_parameters(name), **(parameters or {})})
        target = output_dir / f"{name}.ipynb"
        nbformat.write(result, target)
        published_tables = output_dir / TABLES
        published_tables.mkdir(parents=True, exist_ok=True)
        for old in published_tables.glob(f"{name}-*.csv"):
            old.unlink()
        for csv in csvs:
            shutil.move(str(csv), published_tables / csv.name)
    return target


def publish_table(frame, name: str) -> None:
    """Display ``frame`` (a pandas DataFrame, every column: a page's wide tables are scrolled, not
    cut) and, in a section executed by ``run_section``, write it as ``SECTION-name.csv`` for the
    page's CSV links; elsewhere only display it."""
    import pandas as pd
    from IPython.display import display

    folder, section = os.environ.get(_TABLES_ENV), os.environ.get(_SECTION_ENV)
    if folder and section:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"table name {name!r}: letters, digits, '_' and '-' only")
        frame.to_csv(Path(folder) / f"{section}-{name}.csv", lineterminator="\n")
    with pd.option_context("display.max_columns", None):
        display(frame)


def _figure_reference(file: Path):
    from IPython.display import HTML

    return HTML(f'<img src="{(FIGURES / file.name).as_posix()}" alt="{file.stem}" style="max-width: 100%">')


def publish_figure(fig, name: str):
    """What a notebook displays for ``fig`` (a matplotlib figure, closed here). In a section
    executed by ``run_section``: the figure written beside the page as ``SECTION-name.png`` or
    ``.jpg`` (the smaller, :func:`ptqlib.analysis.plotting.encode_figure`) under ``_static/figures``
    and shown by reference, so the notebook does not carry its bytes and stays the same when a
    later execution cannot draw it (:func:`published_figure`); elsewhere the image itself."""
    from IPython.display import Image

    from ptqlib.analysis.plotting import encode_figure

    ext, data = encode_figure(fig)
    folder, section = os.environ.get(_FIGURES_ENV), os.environ.get(_SECTION_ENV)
    if not (folder and section):
        return Image(data=data, format="jpeg" if ext == "jpg" else "png")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"figure name {name!r}: letters, digits, '_' and '-' only")
    Path(folder).mkdir(parents=True, exist_ok=True)
    for old in Path(folder).glob(f"{section}-{name}.*"):
        old.unlink()
    target = Path(folder) / f"{section}-{name}.{ext}"
    target.write_bytes(data)
    return _figure_reference(target)


def published_figure(name: str):
    """The reference :func:`publish_figure` displayed for ``name`` in this section, if an earlier
    execution (one that could draw it, e.g. with the data) wrote it; else None."""
    folder, section = os.environ.get(_FIGURES_ENV), os.environ.get(_SECTION_ENV)
    found = sorted(Path(folder).glob(f"{section}-{name}.*")) if folder and section else []
    return _figure_reference(found[0]) if found else None


def _shell_value(value) -> str:
    """``value`` as ``-p KEY VALUE`` takes it back (``parse_value``), quoted for a shell."""
    text = value if isinstance(value, str) and parse_value(value) == value else repr(value)
    return shlex.quote(text)


def rerun_command(name: str, parameters: dict | None = None) -> str:
    """The ``ptq section`` command that executes ``name`` with ``parameters``; a parameter
    equal to the section's default (a variant's own value, for a variant) is left out."""
    defaults = section_parameters(name)
    if name in VARIANTS:
        defaults.update(VARIANTS[name].parameters)
    parts = ["ptq", "section", name]
    for key, value in (parameters or {}).items():
        if key not in defaults or defaults[key] != value or type(defaults[key]) is not type(value):
            parts += ["-p", key, _shell_value(value)]
    return " ".join(parts)


PARAMETER_SHOWN = 80  # the longest value (as Python writes it) the prose shows beside a parameter's name


def show_parameters(markdown: str, values: dict) -> str:
    """``markdown`` with the first mention of each parameter (a code span holding only its name,
    like `` `iters` ``) given its value (`` `iters=500` ``), as the page ran it; later mentions in
    the same text, names that are not parameters, fenced code blocks and values longer than
    ``PARAMETER_SHOWN`` characters stay as they are."""
    shown: set[str] = set()

    def value_of(match: re.Match) -> str:
        name = match.group(1)
        text = repr(values[name]) if name in values else ""
        if name in shown or not text or len(text) > PARAMETER_SHOWN:
            return match.group(0)
        shown.add(name)
        return f"`{name}={text}`"

    parts = re.split(r"(^```.*?^```[^\n]*$)", markdown, flags=re.M | re.S)  # odd parts: fenced blocks
    return "".join(part if i % 2 else re.sub(r"(?<!`)`([A-Za-z_]\w*)`(?!`)", value_of, part)
                   for i, part in enumerate(parts))


def _finish(notebook, name: str, command: str, tables: list[str], values: dict | None = None) -> None:
    """Make an executed notebook the published page: show in its prose the values of the
    parameters it names (``values``: the parameters it ran with; :func:`show_parameters`, in
    each markdown cell), collapse the code inputs, append how to rerun it, and keep only what the
    same inputs reproduce (no papermill timings or paths, cell ids numbered from the section
    name)."""
    import nbformat

    notebook.metadata.pop("papermill", None)
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "markdown" and values:
            cell.source = show_parameters(cell.source, values)
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    text = ["## Rerun this page", "",
            "This page is the output of this command, run at the top of the repository "
            "(parameters left out have their default values):", "",
            "```bash", command, "```"]
    if tables:
        links = ", ".join(f"[{Path(t).name}]({t})" for t in tables)
        text += ["", f"Its tables as CSV: {links}."]
    notebook.cells.append(nbformat.v4.new_markdown_cell("\n".join(text)))
    for i, cell in enumerate(notebook.cells):
        cell.id = f"{name}-{i}"


def _merge_streams(outputs: list) -> list:
    """Consecutive printed outputs of one stream as one output: the kernel splits them into
    messages by timing, which would make the same page differ from run to run."""
    merged = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def _retitle(notebook, suffix: str) -> None:
    """Append ``suffix`` to the page title (the first line of the first markdown cell)."""
    cell = notebook.cells[0]
    assert cell.cell_type == "markdown" and cell.source.startswith("# "), "a section starts with its title"
    title, _, rest = cell.source.partition("\n")
    cell.source = f"{title}: {suffix}\n{rest}"


def build_book() -> None:
    """``jupyter-book build book/`` with warnings as errors; the HTML lands in ``_build/html``."""
    import subprocess

    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(BOOK), "--path-output", str(ROOT),
           "-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _run_one(name: str, parameters: dict, output_dir: Path | None) -> str | None:
    """``run_section`` in a worker process: None, or why the section failed (one line)."""
    try:
        run_section(name, parameters, output_dir)
    except Exception as exc:  # reported by name; the other sections go on
        if hasattr(exc, "ename"):  # papermill's error in a cell: the kernel's exception, and the cell
            return f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
        return f"{type(exc).__name__}: {exc}"
    return None


def run_sections(runs: list[tuple[str, dict]], output_dir: Path | None = None, jobs: int = 1,
                 log=print) -> dict[str, str]:
    """Execute each ``(section, parameters)`` of ``runs`` like :func:`run_section`, ``jobs`` at a
    time, each in its own process (a section hands its kernel environment variables, so two cannot
    share one). Every section runs even where another fails, and each that ran to the end is
    published; returns the failed sections, each with why. Sections that compute the same missing
    trials at once may both compute them; the store keeps one row per key."""
    import concurrent.futures
    import multiprocessing

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    for name, parameters in runs:  # every name and parameter refused before any kernel starts
        check_run(name, parameters)
    failed: dict[str, str] = {}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_one, name, parameters, output_dir): name for name, parameters in runs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            name, error = futures[future], future.result()
            if error is not None:
                failed[name] = error
            log(f"[{done}/{len(runs)}] {name}: {'FAILED, ' + error if error else 'published'}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execute the report's section notebooks into book/")
    parser.add_argument("names", nargs="*", help=f"sections (default: all of {', '.join(published())})")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="sections executed at once, each in its own process (default 1)")
    parser.add_argument("--build", action="store_true", help="then build the HTML book")
    args = parser.parse_args(argv)
    names = args.names or published()
    try:
        for name in names:
            check_run(name)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    except ValueError as exc:
        parser.error(str(exc))
    from ptqlib.study.store import DEFAULT_STORE, ResultsStore

    ResultsStore(ROOT / DEFAULT_STORE)  # its committed parts loaded once, before the sections open it at once
    print(f"executing {len(names)} sections, {args.jobs} at a time", flush=True)
    failed = run_sections([(name, {}) for name in names], jobs=args.jobs, log=lambda line: print(line, flush=True))
    if failed:
        print(f"{len(failed)} of {len(names)} sections failed and were not published: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    if args.build:
        build_book()
    return 0


if __name__ == "__main__":
    sys.exit(main())
