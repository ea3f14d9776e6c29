"""ptqlib: post-training quantization and its per-class reliability."""
__version__ = "0.1.0"
