"""llmlab: plain-PyTorch implementations behind the llmlab notebooks.

The folder tells the architecture; imports point one way, from the ground floor up:

* shared helpers: ``_checks`` (argument checking), ``_torch`` (devices, dtypes, random state),
  ``timing``, ``memory`` (parameter counts, the model-state ledger, saved activations),
  ``fitting`` (scaling-law fits);
* one module (or subpackage) per topic: ``models``, ``data``, ``perplexity``, ``decoding``,
  ``schedules``, ``accumulation``, ``checkpointing``, ``svd``, ``lora``, ``precision``,
  ``anatomy``, ``tokenization``, ``distributed``, ``quantization``, ``attention``, ``serving``;
* rendering and front ends: ``display``, ``plotting``, ``widgets``;
* leaves that nothing in the library imports: ``bench`` (``python -m llmlab.bench``),
  ``exercises`` (``check("06.2", answer)``), ``gallery``, ``colab``.
"""

from __future__ import annotations

from ._torch import default_device, seed_everything

__version__ = "0.1.0"

__all__ = ["default_device", "seed_everything", "__version__"]
