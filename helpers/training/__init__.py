"""Training: the Trainer, the learning-rate schedule, weight averaging and run tracking.

Imports the layers below it (core, data, model, eval).
"""
