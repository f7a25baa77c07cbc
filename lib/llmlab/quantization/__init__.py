"""Quantization: fewer bytes per weight, and what it costs (notebook 13).

* :mod:`~llmlab.quantization.rtn`: round-to-nearest with a scale (symmetric absmax or scale +
  minimum), per tensor, per channel or per group; packing b-bit codes into bytes.
* :mod:`~llmlab.quantization.blocks`: GGUF's Q8_0, Q4_0, Q4_1 and Q5_0 blocks, byte-exact
  (:func:`quantize_gguf`, :func:`dequantize_gguf`).
* :mod:`~llmlab.quantization.gguf_file`: what a GGUF file holds (tensor types, bytes) and how its
  tensors map onto the Hugging Face model's parameters.
* :mod:`~llmlab.quantization.model`: schemes applied to a model's linear weights in place, and
  perplexity under each.
* :mod:`~llmlab.quantization.gptq`: GPTQ's error feedback on one layer (Frantar et al. 2023).
* :mod:`~llmlab.quantization.outliers`: LLM.int8()'s outlier features and mixed-precision
  decomposition (Dettmers et al. 2022), SmoothQuant's migration (Xiao et al. 2023).
* :mod:`~llmlab.quantization.speed`: PyTorch's own int8 (and int4 weight-only) kernels against fp32:
  one matrix-vector product, a decode step and a prefill, beside the roofline's prediction.
* :mod:`~llmlab.quantization.int8_quality`: where the dynamic int8 model's quality goes (weights,
  activations, the first token's massive activations).
"""

from .blocks import GGUF_TYPES, GGUFType, dequantize_gguf, gguf_type_name, quantize_gguf
from .model import (SCHEMES, Scheme, SchemeNLL, apply_scheme, block_linears, paired_bootstrap, requantized,
                    scheme_bits_per_weight, scheme_nlls)
from .gguf_file import (GGUFTensor, gguf_metadata, gguf_tensors, gguf_weight, hf_parameter_name, read_gguf_tensor,
                        unpermute_rows)
from .gptq import calibration_hessian, gptq_quantize, layer_output_error
from .outliers import OutlierFeatures, int8_matmul, linear_inputs, outlier_features, smooth_scales
from .rtn import QuantizedTensor, fake_quantize, pack_bits, quantize_rtn, rtn_bits_per_weight, unpack_bits
from .speed import (Int8Timing, MatvecTiming, int4_kernel_available, int8_dynamic_copy, int8_weight_bytes, time_int8,
                    time_matvec)
from .int8_quality import first_token_apart_nlls, float_linears, int8_weights_in_float

__all__ = [
    "GGUF_TYPES", "GGUFType", "quantize_gguf", "dequantize_gguf", "gguf_type_name",
    "QuantizedTensor", "quantize_rtn", "fake_quantize", "rtn_bits_per_weight", "pack_bits", "unpack_bits",
    "Scheme", "SCHEMES", "block_linears", "apply_scheme", "scheme_bits_per_weight", "requantized", "SchemeNLL",
    "scheme_nlls", "paired_bootstrap",
    "GGUFTensor", "gguf_tensors", "gguf_metadata", "read_gguf_tensor", "hf_parameter_name", "unpermute_rows", "gguf_weight",
    "calibration_hessian", "gptq_quantize", "layer_output_error",
    "OutlierFeatures", "linear_inputs", "outlier_features", "int8_matmul", "smooth_scales",
    "int8_dynamic_copy", "int8_weight_bytes", "Int8Timing", "time_int8", "MatvecTiming", "time_matvec",
    "int4_kernel_available", "int8_weights_in_float", "float_linears", "first_token_apart_nlls",
]
