"""The ground floor: errors, safe writes, progress, the configuration, the device, the platform and its keys.

Imports nothing else from helpers.
"""
