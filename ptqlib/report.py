"""Executes the report's section notebooks with papermill, into ``book/``.

The sources are jupytext percent-format files in ``notebooks/`` with a cell tagged
``parameters``. Each is executed into a temporary notebook first; only a notebook that ran to
the end replaces the published one in ``book/``, so a failing section fails the command and
never reaches the book.

    python -m ptqlib.report                       # every section, default parameters
    ptq section first_look -p w_bits 4            # one section with new parameters
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"


def sections() -> list[str]:
    """Section names, in the order of ``notebooks/*.py``."""
    return sorted(p.stem for p in NOTEBOOKS.glob("*.py"))


def parse_value(text: str):
    """``-p KEY VALUE``: a Python literal when it is one (``3``, ``[0, 0.1]``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_section(name: str, parameters: dict | None = None, output_dir: Path | None = None) -> Path:
    import jupytext
    import papermill

    if name not in sections():
        raise ValueError(f"unknown section {name!r}; choose one of {', '.join(sections())}")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
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


def build_book() -> None:
    """``jupyter-book build book/`` with warnings as errors; the HTML lands in ``_build/html``."""
    import subprocess

    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(BOOK), "--path-output", str(ROOT),
           "-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="execute the report's section notebooks into book/")
    parser.add_argument("names", nargs="*", help=f"sections (default: all of {', '.join(sections())})")
    parser.add_argument("--build", action="store_true", help="then build the HTML book")
    args = parser.parse_args(argv)
    for name in args.names or sections():
        print(f"executing section {name}", flush=True)
        run_section(name)
    if args.build:
        build_book()
    return 0


if __name__ == "__main__":
    sys.exit(main())
