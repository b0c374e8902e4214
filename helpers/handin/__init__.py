"""The hand-in: the Kaggle submission CSV, the Autolab bundle, the quiz, and the key scan that guards both.

A leaf: nothing in helpers imports it but the CLI.
"""
