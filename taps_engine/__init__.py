"""TAPS engine: lossless multi-drafter speculative decoding on stock transformers models."""

from .acceptance import SamplingParams
from .decoding import Decoder, GenerationResult, PlainDecoder, StepRecord
from .drafter import Drafter, TreeSettings
from .head import DraftHead, average_heads, load_head, save_head
from .policies import POLICIES, make_policy
from .target import DEFAULT_TARGET, Target, load_target
from .tree import DraftTree

__all__ = ["DEFAULT_TARGET", "POLICIES", "Decoder", "DraftHead", "DraftTree", "Drafter", "GenerationResult",
           "PlainDecoder", "SamplingParams", "StepRecord", "Target", "TreeSettings", "average_heads", "load_head",
           "load_target", "make_policy", "save_head"]
