"""The hand-in: the Kaggle submission CSV and its upload, the hand-in bundle (Gradescope or Autolab, by term), the
quiz, and the key scan that guards both.

A leaf: nothing in helpers imports it but the CLI.
"""
