"""Entry points: the command line, the report builder and benchmarks."""
