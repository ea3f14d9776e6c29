def test_remedy_verdict_needs_a_significant_steadier_gain_at_equal_average():
    import pandas as pd

    from ptqlib.analysis.conclusions import protects_worst_class

    def frame(level, worst_of_seed):
        return pd.DataFrame([{"key": f"{level}{s}", "seed": s, "class": c, "acc": a, "level": level}
                             for s in range(8) for c, a in zip("abc", (worst_of_seed(s), 90.0, 91.0))])

    base = frame("x", lambda s: 60.0 + 4 * (s % 3))
    better = frame("y", lambda s: 70.0 + s % 2)      # +9..+10 points every seed, smaller spread
    worse = frame("z", lambda s: 50.0 + 8 * (s % 3))
    v = protects_worst_class(pd.concat([base, better]), "level", "x", "y", "Remedy")
    assert v.verdict == "supported" and v.trials == 8 and "p = 0.008" in v.evidence  # 8 positive pairs: 2 / 2**8
    assert "95 % interval" in v.evidence
    assert v.text().startswith("Does remedy protect the worst class") and "\n   -> supported: 8 paired trials: " in v.text()
    # z: the worst class loses 2 to 10 points on every seed
    assert protects_worst_class(pd.concat([base, worse]), "level", "x", "z", "Remedy").verdict == "contradicted"
    mixed = frame("w", lambda s: 60.0 + 4 * (s % 3) + (3 if s % 2 else -3))  # +-3 points: no clear gain or loss
    assert protects_worst_class(pd.concat([base, mixed]), "level", "x", "w", "Remedy").verdict == "inconclusive"
    assert protects_worst_class(base, "level", "x", "y", "Remedy").verdict == "not enough data"


