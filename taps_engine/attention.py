"""Attention for any decoder target: which implementation, and the masks a tree forward passes per layer type.

Tree verification passes the model an explicit mask (each node sees the committed prefix and its ancestors). Stock
transformers models take such a mask as given, so the mask must also carry what the model would otherwise add
itself: a sliding window on the layers that have one (Mistral, Phi-3, Gemma 2/3's local layers, Qwen2 with
sliding layers), as a dict per layer type for models that declare layer types. The KV cache keeps every position
(transformers' sliding cache layers drop old ones, which a tree mask cannot describe), and windows are applied by
logical position: a node at depth d sits at prefix + d, as it would in one-token-at-a-time decoding.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

FULL, SLIDING = "full_attention", "sliding_attention"


def text_config(config: PretrainedConfig) -> PretrainedConfig:
    return config.get_text_config()


def architecture(config: PretrainedConfig, default: str) -> str:
    """The architecture name an error should give: the config's first `architectures` entry, else `default`."""
    return (getattr(config, "architectures", None) or [default])[0]


def attn_implementation(config: PretrainedConfig) -> str:
    """sdpa, unless the model needs what sdpa cannot express: attention-logit softcapping (Gemma 2) runs eager."""
    return "eager" if getattr(text_config(config), "attn_logit_softcapping", None) else "sdpa"


def check_supported(config: PretrainedConfig) -> None:
    """ValueError naming the architecture when its attention cannot be expressed by TAPS's tree masks."""
    text = text_config(config)
    name = architecture(config, type(config).__name__)
    if getattr(text, "attention_chunk_size", None):
        raise ValueError(f"{name}: chunked attention (attention_chunk_size) is not supported by tree verification")
    unknown = set(layer_types(config)) - {FULL, SLIDING}
    if unknown:
        raise ValueError(f"{name}: layer types {sorted(unknown)} are not supported (only full and sliding-window "
                         f"attention)")


def layer_types(config: PretrainedConfig) -> list[str]:
    """Each layer's attention type: the config's `layer_types`, else sliding for all when a window is set."""
    text = text_config(config)
    declared = getattr(text, "layer_types", None)
    if declared is not None:
        return list(declared)
    sliding = getattr(text, "sliding_window", None) is not None
    return [SLIDING if sliding else FULL] * text.num_hidden_layers


def for_implementation(mask: torch.Tensor, config: PretrainedConfig, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4D mask as the config's attention implementation takes it: as is for sdpa, additive for eager."""
    if text_config(config)._attn_implementation != "eager":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def has_sliding_layers(config: PretrainedConfig) -> bool:
    return SLIDING in layer_types(config)


def output_logits(config: PretrainedConfig, logits: torch.Tensor) -> torch.Tensor:
    """What the model's own forward does to the LM head's output (the verifier and drafters compute logits from
    features): final-logit softcapping (Gemma 2/3), logit scaling (Granite divides, Cohere multiplies)."""
    text = text_config(config)
    cap = getattr(text, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if getattr(text, "logits_scaling", None):
        logits = logits / text.logits_scaling
    if getattr(text, "logit_scale", None):
        logits = logits * text.logit_scale
    return logits


def model_mask(config: PretrainedConfig, visible: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The `attention_mask` argument for a decoder forward.

    `visible` (B, Q, K) says which keys each query may attend to regardless of windows; `q_pos` (B, Q) and
    `k_pos` (B, K) are their logical positions. Returns a (B, 1, Q, K) mask, boolean for sdpa and additive for
    eager, or a dict of them per layer type for models that declare layer types.
    """
    text = text_config(config)
    window = getattr(text, "sliding_window", None)
    masks = {}
    for kind in set(layer_types(config)):
        mask = visible
        if kind == SLIDING:
            mask = mask & (k_pos[:, None, :] > q_pos[:, :, None] - window)
        masks[kind] = for_implementation(mask[:, None], config, dtype)
    if getattr(text, "layer_types", None) is not None:
        return masks
    return next(iter(masks.values()))
