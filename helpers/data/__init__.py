"""Data roots and images: the course layouts, image decoding, datasets, packs, prepared and demo roots,
where the data comes from, and augmentation.

Imports only helpers.core.
"""
