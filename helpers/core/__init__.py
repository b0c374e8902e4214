"""The ground floor: errors, safe writes, progress, the configuration, the device, the host (Colab, Kaggle,
local) and its keys.

Imports nothing else from helpers.
"""
