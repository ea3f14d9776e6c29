"""The study's trials: settings, calibration sets, one trial, the results store and sweeps."""
