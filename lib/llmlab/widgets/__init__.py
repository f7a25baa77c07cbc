"""Thin ipywidgets front ends over the llmlab functions, one module per notebook topic.

Every widget derives from :class:`~llmlab.widgets.base.LabWidget`: controls as attributes,
``readout`` (HTML), ``plot`` (a PNG, for widgets that draw a figure), ``last`` (the numbers
shown) and ``widget`` (the box to display); moving a control calls ``refresh()``. A notebook
drives a widget from code by setting a control's ``.value``, so CI runs the same callbacks a
person triggers. Heavy work (an SVD, a model forward) is done once when the widget is built; a
refresh only does the cheap per-step part.
"""

from .accumulation import AccumulationExplorer, accumulation_explorer
from .anatomy import MaskExplorer, mask_explorer
from .attention import AttentionBlockWidget, attention_block_widget
from .base import LabWidget
from .checkpointing import CheckpointingWidget, checkpointing_widget
from .decoding import DecodingWidget, decoding_widget
from .distributed import DataParallelWidget, data_parallel_widget
from .lora import LoRARankExplorer, lora_rank_explorer
from .model_parallel import PipelineTimelineWidget, PlannerWidget, pipeline_timeline_widget, planner_widget
from .precision import PrecisionWidget, precision_widget
from .prompting import DPOBetaExplorer, dpo_beta_explorer
from .quantization import QuantErrorWidget, quant_error_widget
from .schedules import CosineExplorer, cosine_explorer
from .serving import ServingWidget, serving_widget
from .svd import SVDExplorer, svd_explorer
from .tokenization import BPEMergesWidget, bpe_merges_widget

__all__ = [
    "LabWidget",
    "svd_explorer", "SVDExplorer",
    "decoding_widget", "DecodingWidget",
    "cosine_explorer", "CosineExplorer",
    "accumulation_explorer", "AccumulationExplorer",
    "checkpointing_widget", "CheckpointingWidget",
    "lora_rank_explorer", "LoRARankExplorer",
    "precision_widget", "PrecisionWidget",
    "mask_explorer", "MaskExplorer",
    "dpo_beta_explorer", "DPOBetaExplorer",
    "bpe_merges_widget", "BPEMergesWidget",
    "data_parallel_widget", "DataParallelWidget",
    "quant_error_widget", "QuantErrorWidget",
    "attention_block_widget", "AttentionBlockWidget",
    "serving_widget", "ServingWidget",
    "pipeline_timeline_widget", "PipelineTimelineWidget", "planner_widget", "PlannerWidget",
]
