"""Quantization: the quantizer, range estimators, quantized layers and their placement, calibration, reconstruction and the integer engine."""
