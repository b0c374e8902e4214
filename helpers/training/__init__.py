"""Training: the Trainer, the learning-rate schedule, weight averaging, the noise-aware choice of the weights
``best.pt`` holds, and run tracking.

Imports the layers below it (core, data, model, runtime, eval).
"""
