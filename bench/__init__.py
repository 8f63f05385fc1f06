"""Benchmark scripts that print numbers (see docs/performance.md).  Run each
from the repository root as a module: ``python -m bench.<script> --help``."""
