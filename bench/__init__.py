"""Benchmark scripts that print numbers (see the README's Benchmark section).  Run each
from the repository root as a module: ``python -m bench.<script> --help``."""
