"""Thin ipywidgets front ends over the llmlab functions, one per notebook.

Each builder returns an object whose ``.widget`` is displayed by the notebook and whose
controls (``.k``, ``.steps`` ...) and readouts can be driven from code, so CI exercises the
same callbacks a person triggers by moving a slider. Heavy work (an SVD, a model forward) is
done once when the widget is built; a callback only does the cheap per-step part.
"""

from __future__ import annotations

import ipywidgets as W

# === section: svd ===
# === end: svd ===

# === section: decoding ===
# === end: decoding ===

# === section: schedules ===
# === end: schedules ===

# === section: accumulation ===
# === end: accumulation ===

# === section: checkpointing ===
# === end: checkpointing ===

# === section: lora ===
# === end: lora ===
