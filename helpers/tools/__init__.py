"""Tools around training: benchmarks, the self-test, sweeps and reports.

A leaf: nothing in helpers imports it but the CLI.
"""
