import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import pandas as pd

from ptqlib.analysis.aggregate import class_summary, heatmap_data
from ptqlib.analysis.plotting import delta_heatmap, drop_boxplot, mean_std_lines


def tidy_frame():
    rng = np.random.default_rng(0)
    rows = []
    for t in range(6):
        for cls in ("a", "b", "c"):
            acc = 80 + rng.normal()
            rows.append({"key": f"t{t}", "noise": t % 2, "class": cls, "acc": acc, "fp_acc": 85.0, "drop": 85 - acc})
    return pd.DataFrame(rows)


def test_boxplot_has_a_box_per_class_and_the_average():
    ax = drop_boxplot(tidy_frame(), title="x")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "Average"]
    assert "6 trials" in ax.get_title()


def test_heatmap_writes_the_std_change_in_every_cell():
    d_mean, d_std = heatmap_data(tidy_frame(), "noise", 0)
    ax = delta_heatmap(d_mean, d_std, "noise")
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 8 and texts[0] == "+0.00" and texts[1] == f"{d_std.iat[0, 1]:+.2f}"


def test_mean_std_lines_one_line_per_class():
    ax = mean_std_lines(class_summary(tidy_frame(), by=["noise"]), "noise")
    assert len(ax.get_legend().get_texts()) == 4
    assert ax.get_ylabel() == "accuracy (%), mean ± std over trials"  # what the error bars are


def test_worst_class_boxes_one_box_per_level_with_its_medians():
    from ptqlib.analysis.plotting import worst_class_boxes

    from matplotlib.colors import same_color

    frame = tidy_frame()
    fig = worst_class_boxes(frame, "noise", [0, 1, 7])  # level 7 has no trials: no box
    per_trial = frame.groupby(["noise", "key"])["acc"]
    for ax, expected in zip(fig.axes, (per_trial.min(), per_trial.mean())):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0\n(3 trials)", "1\n(3 trials)"]
        medians = [line.get_ydata()[0] for line in ax.lines if same_color(line.get_color(), "tab:red")]
        assert np.allclose(medians, expected.groupby("noise").median().to_numpy())


def test_image_grid_shows_each_image_with_its_caption():
    from ptqlib.analysis.plotting import image_grid

    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    fig = image_grid(images, [f"img {i}" for i in range(5)], columns=4)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 8 and len(shown) == 5
    assert np.array_equal(shown[2].images[0].get_array(), images[2].transpose(1, 2, 0))
    assert [ax.get_title() for ax in shown] == [f"img {i}" for i in range(5)]


def test_encode_figure_takes_the_smaller_encoding_and_closes_the_figure():
    import matplotlib.pyplot as plt

    from ptqlib.analysis.plotting import encode_figure, image_grid

    noisy = np.random.default_rng(0).integers(0, 256, (4, 3, 64, 64), dtype=np.uint8)  # photo-like detail
    fig = image_grid(noisy, [f"img {i}" for i in range(4)], columns=2)
    ext, data = encode_figure(fig)
    assert ext == "jpg" and data[:2] == b"\xff\xd8"  # the JPEG start-of-image marker
    assert not plt.fignum_exists(fig.number)
    flat = np.zeros((4, 3, 8, 8), dtype=np.uint8)  # flat colour compresses better without loss
    ext, data = encode_figure(image_grid(flat, [f"img {i}" for i in range(4)], columns=2))
    assert ext == "png" and data[:4] == b"\x89PNG"


def test_a_published_figure_is_shown_by_reference_and_found_again_without_its_data(tmp_path, monkeypatch):
    """In a section run, the figure goes beside the page and the notebook shows a reference to it;
    a later execution that cannot draw it (no data) shows the same reference, so the notebook's
    bytes do not change; outside a section run the image itself is shown."""
    import matplotlib.pyplot as plt

    from ptqlib.app import report

    monkeypatch.delenv(report._FIGURES_ENV, raising=False)
    assert report.publish_figure(plt.figure(), "grid").format in ("png", "jpeg")  # no section: inline
    assert report.published_figure("grid") is None
    monkeypatch.setenv(report._FIGURES_ENV, str(tmp_path / "figures"))
    monkeypatch.setenv(report._SECTION_ENV, "protect")
    assert report.published_figure("grid") is None  # nothing drawn yet
    drawn = report.publish_figure(plt.figure(), "grid")
    files = list((tmp_path / "figures").glob("protect-grid.*"))
    assert len(files) == 1 and f'src="_static/figures/{files[0].name}"' in drawn.data
    assert report.published_figure("grid").data == drawn.data
    with pytest.raises(ValueError, match="figure name 'a b'"):
        report.publish_figure(plt.figure(), "a b")


def test_summary_lines_one_line_per_model_in_the_given_level_order():
    from ptqlib.analysis.plotting import summary_lines

    summary = pd.DataFrame({"model": ["m1", "m1", "m2"], "bits": [4, 8, 4], "worst_mean": [60.0, 70.0, 65.0],
                            "worst_std": [1.0, 2.0, 0.5]})
    ax = summary_lines(summary, "bits", "worst_mean", levels=[8, 4])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m1", "m2"]
    m1, m2 = (c.lines[0] for c in ax.containers)  # each errorbar's data line
    assert list(m1.get_ydata()) == [70.0, 60.0]  # level 8 first, as asked
    assert np.isnan(m2.get_ydata()[0]) and m2.get_ydata()[1] == 65.0  # m2 has no level 8


def test_equivalence_lines_draw_the_tests_interval_for_the_methods_against_the_target():
    from scipy import stats

    from ptqlib.analysis.plotting import equivalence_lines

    nan = np.nan
    curve = pd.DataFrame({"method": ["a", "a", "a", "b", "b", "c", "c"],
                          "iters": [500, 2000, 20000, 500, 20000, 500, 5000], "reference": [20000] * 5 + [5000] * 2,
                          "worst_diff": [1.0, -0.2, nan, 0.3, nan, 0.1, nan], "diff_se": [0.4, 0.5, nan, 0.2, nan, 0.1, nan],
                          "diff_df": [10.0, 8.0, nan, 12.0, nan, 5.0, nan]})
    ax = equivalence_lines(curve, margin=1.0, target=20000)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["within 1.0 points", "a", "b"]  # c: not 20000
    a, b = ax.containers
    assert list(a.lines[0].get_ydata()) == [1.0, -0.2] and list(b.lines[0].get_ydata()) == [0.3]
    # the bars span the 90 % interval (two one-sided tests at 5 %), not the 95 % one
    segments = a.lines[2][0].get_segments()
    half = stats.t.ppf(0.95, 10.0) * 0.4
    assert segments[0][0][1] == pytest.approx(1.0 - half) and segments[0][1][1] == pytest.approx(1.0 + half)
    band = ax.patches[0].get_bbox()  # y in data coordinates
    assert (band.y0, band.y1) == pytest.approx((-1.0, 1.0))
    assert ax.get_ylabel() == "worst class minus 20,000's (points)"
    # with the test's fixed sample: a count short of it is hollow
    ax = equivalence_lines(curve.assign(trials=[10, 3, 10, 10, 10, 10, 10]), margin=1.0, target=20000, trials=10)
    faces = [c.lines[0].get_markerfacecolor() for c in ax.containers]
    assert faces[1] == "white" and faces[0] != "white" and len(faces) == 3  # a: one full, one hollow; b: full
    assert ax.get_legend().get_texts()[-1].get_text() == "hollow: the count or 20,000 not yet on seeds 0-9"
    gap = curve.assign(trials=10, first_seeds=[True, True, True, False, True, True, True])  # b's 500: a gap
    faces = [c.lines[0].get_markerfacecolor() for c in equivalence_lines(gap, 1.0, 20000, trials=10).containers]
    assert faces[0] != "white" and faces[1] == "white"
