"""Builds the whole book on a tiny configuration and opens every page in headless Chromium.

Every section notebook is executed by papermill with parameters pointing at a store, data and
weights made here, the book is compiled by Jupyter Book, and each page is loaded in Debian's
Chromium (driven by Selenium): every figure must load and no cell may show an error, every code
input is collapsed behind its toggle, and no printed output or table runs past the text column.
Full-page screenshots of the intro, a factor page and the conclusions land in the test's
temporary folder (``screenshots/``).
"""
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ptqlib.models import CifarResNet
from ptqlib.app.report import BOOK, ROOT, VARIANTS, published, run_section, sections
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials
from ptqlib.train import TrainConfig, train

from .conftest import randomize_bn

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


def _tiny_inputs(root: Path, tiny_data: Path) -> dict:
    """A store with every factor's cells, a training card and a single-trial result."""
    weights = root / "weights" / "resnet20.pt"
    weights.parent.mkdir(parents=True)
    torch.save(randomize_bn(CifarResNet(3, num_classes=3)).state_dict(), weights)
    dataset = f"folder:{tiny_data}"
    train(TrainConfig("resnet20", dataset, str(weights), epochs=1, batch_size=8), root / "cards" / "resnet20.pt",
          log=lambda m: None)
    store = ResultsStore(root / "trials.sqlite")
    cell = Cell("resnet20", dataset, calib_size=8, weights=str(weights), iters=2)
    for factor, levels in {"noise": [0.0, 0.25], "bias_class": [None, "ant"], "calib_size": [8, 16],
                           "w_bits": [8, 4], "metric": ["mse", "minmax"], "optimizer": ["grid", "brecq"],
                           "sampling": ["random", "stratified"]}.items():
        ensure_trials(store, cell, factor, levels, trials=2, progress=False)
    ensure_trials(store, replace(cell, optimizer="brecq"), "class_weighting", [None, "dro"], trials=2, progress=False)
    ensure_trials(store, replace(cell, optimizer="brecq"), "iters", [2, 4], trials=1, progress=False)
    ensure_trials(store, replace(cell, optimizer="brecq"), "variant", ["joint", "reference"], trials=2,
                  progress=False)
    ensure_trials(store, replace(cell, optimizer="brecq", variant="reference"), "iters", [2, 4], trials=1,
                  progress=False)
    ensure_trials(store, cell, "engine", ["fake", "int8"], trials=2, progress=False)
    results = root / "quantize"
    results.mkdir()
    out = subprocess.run([sys.executable, "-m", "ptqlib.app.cli", "quantize", "--data", dataset, "--weights",
                          str(weights), "--calib-size", "8", "--json"], capture_output=True, text=True, check=True)
    (results / "resnet20-w4a4-mse.json").write_text(out.stdout)
    (results / "resnet20-w4a4-grid-1024.json").write_text(out.stdout)
    subprocess.run([sys.executable, "-m", "ptqlib.app.cli", "robustness", "--data", dataset, "--weights", str(weights),
                    "--calib-size", "8", "--trials", "2", "--corruptions", "jpeg", "--out",
                    str(results / "robustness.json")], capture_output=True, check=True)
    common = {"store_path": str(store.path), "dataset": dataset, "weights": str(weights), "trials": 2}
    return {
        "intro": {**common, "calib_size": 8},
        "models": {"weights_dir": str(root / "cards")},
        "first_look": {"results_dir": str(results), "recon_dir": str(results)},
        "reliability": {**common, "calib_size": 8},
        "noise": {**common, "calib_size": 8, "levels": [0.0, 0.25]},
        "bias": {**common, "calib_size": 8, "bias_classes": ["ant"]},
        "calib_size": {**common, "levels": [8, 16]},
        "bitwidth": {**common, "calib_size": 8, "levels": [8, 4]},
        "metric": {**common, "calib_size": 8, "levels": ["mse", "minmax"]},
        "optimizer": {**common, "calib_size": 8, "levels": ["grid", "brecq"], "iters": 2, "curve_methods": ["brecq"],
                      "curve_iters": [2, 4], "curve_trials": 1, "reference_iters": 2, "reference_trials": 2},
        "depth": {**common, "models": ["resnet20"], "calib_size": 8,
                  "factors": {"calib_size": [8, 16], "metric": ["mse", "minmax"], "w_bits": [8, 4]}},
        "family": {**common, "models": ["resnet20"], "calib_size": 8, "w_bits": 4, "a_bits": 4,
                   "factors": {"calib_size": [8, 16], "w_bits": [8, 4]}, "chance_draws": 50},
        "protect": {**common, "calib_size": 8, "recon_calib_size": 8, "recon_iters": 2, "recon_trials": 2,
                    "exemplars_per_class": 2, "robustness_file": str(results / "robustness.json")},
        "recon_conventions": {**common, "calib_size": 8, "iters": 2, "methods": ["brecq"]},
        "integer": {"store_path": str(store.path), "cells": [["resnet20", dataset, 4, 4]], "weights": str(weights),
                    "calib_size": 8, "trials": 2, "chance_draws": 50},
        "conclusions": {**common, "calib_size": 8, "bias_classes": ["ant"], "recon_iters": 2,
                        "recon_trials": 2, "calib_sizes": [8, 16], "chance_draws": 50},
    }


def test_every_section_renders_in_a_browser(tmp_path, tiny_data):
    params = _tiny_inputs(tmp_path / "inputs", tiny_data)
    assert set(params) == set(sections()), "a section has no tiny configuration in this test"
    site = tmp_path / "site"
    (site / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, site / name)
    (site / "book" / "_toc.yml").symlink_to("../_toc.yml")
    for page in BOOK.glob("*.md"):
        shutil.copy(page, site / "book" / page.name)
    (site / "book" / "_static").mkdir()
    for css in (BOOK / "_static").glob("*.css"):
        shutil.copy(css, site / "book" / "_static" / css.name)
    for name, p in params.items():
        run_section(name, p, site / "book")
    optimizer_page = (site / "book" / "optimizer.ipynb").read_text()
    for v in ("joint", "reference"):  # the iteration study ran in both variants
        assert f"{v} brecq: worst class against 4 iterations: 2: " in optimizer_page, v
    for name, variant in VARIANTS.items():  # the variants' own settings, on the tiny model and data
        bits = {"w_bits": 4, "a_bits": 4} if "w_bits" in variant.parameters else {}
        run_section(name, {**params[variant.section], "model": "resnet20", **bits}, site / "book")
    jb = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jb), "build", str(site / "book"), "--path-output", str(site), "-W", "-n", "--keep-going"],
                   check=True, capture_output=True, cwd=site)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*WINDOW)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        toc = re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())
        for name in sorted(set(toc) - set(published())):  # the markdown pages: only the layout
            driver.get((site / "_build" / "html" / f"{name}.html").as_uri())
            layout = _layout(driver)
            assert not layout["cut"], f"{name}: {layout['cut']}"
        for name in published():
            page = site / "_build" / "html" / f"{name}.html"
            expected = set(re.findall(r'<img[^>]*src="(_images/[^"]+)"', page.read_text()))
            # conclusions and the conventions are tables; every other section carries a figure
            assert expected or name.startswith(TABLE_PAGES), f"{name}: no figure on the page"
            driver.get(page.as_uri())
            # readyState can be 'complete' a moment before the document's images are attached
            # (seen with headless Chromium on file:// pages), so wait for them, then check each
            try:
                WebDriverWait(driver, 30).until(lambda d, want=expected: _loaded_images(d, want))
            except TimeoutException:
                pytest.fail(f"{name}: figures not loaded after 30 s: {sorted(expected - _loaded_images(driver))}")
            text = driver.find_element("tag name", "body").text
            assert "Traceback" not in text and "Error" not in driver.title, name
            if name in VARIANTS:
                assert VARIANTS[name].title in driver.title, f"{name}: page title {driver.title!r}"
            layout = _layout(driver)
            assert layout["inputs"] and not layout["open_inputs"], f"{name}: code inputs shown {layout}"
            assert not layout["cut"], f"{name}: output wider than the text column: {layout['cut']}"
            csvs = re.findall(r'href="([^"]+\.csv)"', page.read_text())
            assert all((page.parent / href).is_file() for href in csvs), f"{name}: CSV links {csvs}"
            assert "ptq section " + name in text, f"{name}: no rerun command"
            if name in ("intro", "noise", "conclusions"):
                _screenshot(driver, shots / f"{name}.png")
    finally:
        driver.quit()
    print(f"screenshots: {shots}")
    assert sorted(p.name for p in shots.glob("*.png")) == ["conclusions.png", "intro.png", "noise.png"]


TABLE_PAGES = ("conclusions", "recon_conventions")  # pages without a figure
WINDOW = (1280, 1000)  # a laptop screen: the theme shows the navigation and the page's contents

# Every <pre> and <table> the reader can see, each with the element that bounds it sideways (its
# nearest ancestor that scrolls or clips, else itself): that box must lie inside the text column
# (the article), must not hide what it clips, and printed output (a cell's <pre>) must wrap
# rather than scroll. Code inputs are counted, and those the reader sees without opening a toggle.
_LAYOUT_JS = """
const column = document.querySelector('article.bd-article') || document.querySelector('main');
if (!column) throw new Error('no article on the page ' + document.title);
const col = column.getBoundingClientRect();
const name = (el) => el.tagName.toLowerCase()
  + (el.className ? '.' + String(el.className).trim().split(/\\s+/).join('.') : '');
const cut = [];
for (const el of column.querySelectorAll('pre, table')) {
  if (!el.checkVisibility()) continue;  // inside a closed toggle
  let box = el;
  for (let a = el; a && a !== column; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') { box = a; break; }
  }
  const r = box.getBoundingClientRect(), clips = ['hidden', 'clip'].includes(getComputedStyle(box).overflowX);
  const text = el.textContent.trim().slice(0, 60);
  if (r.left < col.left - 1 || r.right > col.right + 1)
    cut.push(`${name(el)} in ${name(box)} spans ${Math.round(r.left)}-${Math.round(r.right)} px, `
             + `the column ${Math.round(col.left)}-${Math.round(col.right)}: ${text}`);
  else if (clips && box.scrollWidth > box.clientWidth + 1)
    cut.push(`${name(el)} clipped by ${name(box)} (${box.scrollWidth} > ${box.clientWidth} px): ${text}`);
  if (el.tagName === 'PRE' && el.closest('div.cell_output') && el.scrollWidth > el.clientWidth + 1)
    cut.push(`printed output does not wrap (${el.scrollWidth} > ${el.clientWidth} px): ${text}`);
}
const inputs = Array.from(document.querySelectorAll('div.cell_input'));
return {cut: cut, inputs: inputs.length, open_inputs: inputs.filter(e => e.checkVisibility()).length};
"""


def _layout(d) -> dict:
    return d.execute_script(_LAYOUT_JS)


def _screenshot(d, path: Path) -> None:
    """The whole page, top to bottom, at the test's window width."""
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(WINDOW[0], max(WINDOW[1], height))
    try:
        assert d.save_screenshot(str(path)), path
    finally:
        d.set_window_size(*WINDOW)


def _loaded_images(d, expected: set[str] | None = None) -> set[str] | bool:
    """The figures the browser has decoded; with ``expected``, True once all of them are."""
    images = d.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);")
    loaded = {src for src, ok in images if ok}
    return loaded if expected is None else expected <= loaded
