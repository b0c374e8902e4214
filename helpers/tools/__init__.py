"""Tools around training: benchmarks, the self-test, hyperparameter search and reports.

A leaf: nothing in helpers imports it but the CLI.
"""
