"""Verification: embedding images, scoring pairs, EER and other metrics, score normalisation, plots,
and the noise-aware choice between checkpoints.

Imports helpers.core, helpers.data and helpers.model.
"""
