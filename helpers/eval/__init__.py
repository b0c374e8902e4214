"""Verification: embedding images, scoring pairs, EER and other metrics, score normalisation, plots.

Imports helpers.core, helpers.data, helpers.model and helpers.runtime.
"""
