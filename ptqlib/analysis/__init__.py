"""Analysis of stored trials: aggregation, statistics, verdicts, robustness, cells and plots."""
