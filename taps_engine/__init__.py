"""TAPS engine: lossless multi-drafter speculative decoding on stock transformers models."""

from .acceptance import SamplingParams
from .decoding import Decoder, GenerationResult, PlainDecoder, StepRecord
from .drafter import Drafter
from .head import DraftHead, average_heads, load_head, save_head
from .policies import POLICIES, Decision, make_policy
from .prompt import PromptFormat
from .target import DEFAULT_TARGET, Target, load_target
from .tree import DraftTree, TreeSettings, default_tree

__all__ = ["DEFAULT_TARGET", "POLICIES", "Decision", "Decoder", "DraftHead", "DraftTree", "Drafter",
           "GenerationResult", "PlainDecoder", "PromptFormat", "SamplingParams", "StepRecord", "Target",
           "TreeSettings", "average_heads", "default_tree", "load_head", "load_target", "make_policy", "save_head"]
