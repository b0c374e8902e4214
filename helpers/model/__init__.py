"""The network: ResNet backbones, the embedding head, margin heads, model_arch text and checkpoint files.

Imports only helpers.core.
"""
