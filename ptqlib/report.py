"""Executes the report's section notebooks with papermill, into ``book/``.

The sources are jupytext percent-format files in ``notebooks/`` with a cell tagged
``parameters``. Each is executed into a temporary notebook first; only a notebook that ran to
the end replaces the published one in ``book/``, so a failing section fails the command and
never reaches the book.

    python -m ptqlib.report                       # every section, default parameters
    ptq section first_look -p w_bits 4            # one section with new parameters
    ptq section noise_lite0                       # a variant: the noise section on EfficientNet-Lite0

A *variant* publishes a section a second time, under its own name and title, with other
parameters (``VARIANTS``): the factor sections again on ImageNet with EfficientNet-Lite0.
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"


@dataclass(frozen=True)
class Variant:
    section: str  # the notebook in notebooks/
    title: str  # appended to the section's title
    parameters: dict


_LITE0 = {"model": "efficientnet_lite0", "dataset": "imagenet-val10"}
_LITE0_CELL = {**_LITE0, "w_bits": 6, "a_bits": 6}  # W8A8 is lossless on it (see bitwidth_lite0)
_LITE0_TITLE = "EfficientNet-Lite0 on ImageNet"
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
        "robustness_file": "results/robustness/efficientnet_lite0-w6a6-mse-256.json",
        "recon_missing": "Class-weighted BRECQ has no trials on EfficientNet-Lite0. A BRECQ trial of it takes "
                         "about 70 minutes at 500 iterations per block on the 2-core CPU this report was "
                         "computed on (results/bench/efficientnet_lite0-w4a8-brecq-20it-256.json). The plain "
                         "trials shown ran on an NVIDIA H200 lent for 15 minutes: 12 at once, 315 s each, "
                         "so 26 s a trial (results/gpu/README.md); 50 pairs would take about 45 minutes "
                         "there. The command: `ptq sweep --model efficientnet_lite0 --data imagenet-val10 "
                         "--w-bits 6 --a-bits 6 --optimizer brecq --calib-size 1000 --iters 500 --trials 50 "
                         "--device cuda`, once plain and once with `--class-weighting dro`."}),
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


def run_section(name: str, parameters: dict | None = None, output_dir: Path | None = None) -> Path:
    """Execute section (or variant) ``name`` into ``output_dir/name.ipynb``; ``parameters``
    override the notebook's (and, for a variant, the variant's)."""
    import jupytext
    import papermill

    if name not in published():
        raise ValueError(f"unknown section {name!r}; choose one of {', '.join(published())}")
    check_parameters(name, parameters or {})
    variant = VARIANTS.get(name)
    if variant is not None:
        parameters = {**variant.parameters, **(parameters or {})}
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    notebook = jupytext.read(NOTEBOOKS / f"{variant.section if variant else name}.py")
    if variant is not None:
        _retitle(notebook, variant.title)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    output_dir = output_dir or BOOK
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source, executed = Path(tmp) / f"{name}.ipynb", Path(tmp) / f"{name}.out.ipynb"
        jupytext.write(notebook, source)
        papermill.execute_notebook(str(source), str(executed), parameters=parameters or {},
                                   cwd=str(ROOT), kernel_name="python3", progress_bar=False)
        target = output_dir / f"{name}.ipynb"
        shutil.move(str(executed), target)
    return target


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execute the report's section notebooks into book/")
    parser.add_argument("names", nargs="*", help=f"sections (default: all of {', '.join(published())})")
    parser.add_argument("--build", action="store_true", help="then build the HTML book")
    args = parser.parse_args(argv)
    for name in args.names or published():
        print(f"executing section {name}", flush=True)
        run_section(name)
    if args.build:
        build_book()
    return 0


if __name__ == "__main__":
    sys.exit(main())
