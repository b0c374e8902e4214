"""The ground floor: errors, safe writes, progress, the configuration, the host (Colab, Kaggle, local), its keys
and the kaggle command that downloads the course data.

Imports nothing else from helpers.
"""
