"""EAGLE-2 draft head: `fc(concat(embed(token), feature))` then one decoder layer of the target's own class.

The head owns only `fc` and `layers.0` (EAGLE's key layout); the embedding and LM head are the target's frozen
ones and are never stored in a head checkpoint. A head may carry a draft vocabulary: the target token ids it
drafts from (its training data's most frequent), stored as EAGLE-3's `d2t` buffer (draft index i -> target id
i + d2t[i]). Drafting then reads only those rows of the target's LM head; verification keeps the full vocabulary,
so output is unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .attention import attn_implementation, for_implementation
from .fileio import atomic_write, write_json

HEAD_WEIGHTS = "model.safetensors"
HEAD_CONFIG = "config.json"
# Shapes a head may take from its own checkpoint config instead of the target's.
_OVERRIDABLE = ("intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
# Extra tensors found in EAGLE/HASS checkpoints that belong to the target, not the head (EAGLE-3's `t2d` is the
# inverse of `d2t`).
_IGNORED_PREFIXES = ("embed_tokens.", "lm_head.", "norm.", "t2d")
D2T = "d2t"


def _decoder(model: PreTrainedModel) -> nn.Module:
    decoder = model.get_decoder()
    if not hasattr(decoder, "layers") or not hasattr(decoder, "rotary_emb"):
        raise ValueError(f"{type(model).__name__} is not a Llama/Qwen-style decoder (needs layers and rotary_emb)")
    return decoder


def head_config(target_config: PretrainedConfig, overrides: dict | None = None) -> PretrainedConfig:
    """The target's config reduced to one full-attention layer, optionally resized by a checkpoint's config."""
    config = copy.deepcopy(target_config)
    for key, value in (overrides or {}).items():
        if key in _OVERRIDABLE and value is not None:
            setattr(config, key, value)
    config.num_hidden_layers = 1
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = ["full_attention"]
    if hasattr(config, "use_sliding_window"):
        config.use_sliding_window = False
    if hasattr(config, "sliding_window"):
        config.sliding_window = None
    config._attn_implementation = attn_implementation(config)
    return config


def causal_mask(q_len: int, past: int, device: torch.device) -> torch.Tensor:
    """4D boolean mask (True = attend) for `q_len` new positions after `past` cached ones."""
    kv = torch.arange(past + q_len, device=device)
    q = torch.arange(past, past + q_len, device=device)
    return (kv[None, :] <= q[:, None])[None, None]


class DraftHead(nn.Module):
    """Predicts the target's next feature from (next token, current feature); trains and drafts alike."""

    def __init__(self, config: PretrainedConfig, layer_cls: type[nn.Module], rotary_cls: type[nn.Module],
                 fc_bias: bool = False, input_norm: bool = False) -> None:
        super().__init__()
        self.config = config
        self.fc_bias = fc_bias
        self.input_norm = input_norm
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=fc_bias)
        layer = layer_cls(config, layer_idx=0)
        if not input_norm:
            layer.input_layernorm = nn.Identity()
        self.layers = nn.ModuleList([layer])
        self.rotary_emb = rotary_cls(config=config)
        # models with per-layer-type rotary settings (Gemma 3) take the layer type; the head's is full attention
        takes_type = "layer_type" in inspect.signature(rotary_cls.forward).parameters
        self._rotary_kwargs = {"layer_type": "full_attention"} if takes_type else {}

    @classmethod
    def for_target(cls, model: PreTrainedModel, overrides: dict | None = None, fc_bias: bool = False,
                   input_norm: bool = False) -> "DraftHead":
        """A freshly initialised head shaped for `model`, in its dtype and on its device."""
        decoder = _decoder(model)
        config = head_config(model.config, overrides)
        head = cls(config, type(decoder.layers[0]), type(decoder.rotary_emb), fc_bias, input_norm)
        return head.to(device=model.device, dtype=model.dtype)

    @classmethod
    def random(cls, model: PreTrainedModel, seed: int = 0) -> "DraftHead":
        """An untrained head: exercises the decoding path before trained drafters exist."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.for_target(model)

    def set_draft_vocab(self, token_ids: torch.Tensor | None) -> None:
        """Draft from these target token ids only (None: the full vocabulary)."""
        if token_ids is None:
            self._buffers.pop(D2T, None)
            return
        ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        vocab = self.config.vocab_size
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= vocab or ids.unique().numel() != ids.numel():
            raise ValueError(f"a draft vocabulary must hold distinct token ids in [0, {vocab})")
        self.register_buffer(D2T, (ids - torch.arange(ids.numel())).to(self.fc.weight.device))

    @property
    def draft_vocab(self) -> torch.Tensor | None:
        """The target token ids of the draft vocabulary, in draft-index order; None for the full vocabulary."""
        d2t = self._buffers.get(D2T)
        return None if d2t is None else d2t + torch.arange(d2t.numel(), device=d2t.device)

    def forward(self, token_embeds: torch.Tensor, features: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """Shapes: embeds/features (B, T, H), position_ids (B, T); returns predicted features (B, T, H).

        Without a mask the new positions attend causally to the cache and to each other.
        """
        hidden = self.fc(torch.cat([token_embeds, features.to(token_embeds.dtype)], dim=-1))
        if attention_mask is None:
            past = cache.get_seq_length() if cache is not None else 0
            attention_mask = causal_mask(hidden.shape[1], past, hidden.device)
        attention_mask = for_implementation(attention_mask, self.config, hidden.dtype)
        position_embeddings = self.rotary_emb(hidden, position_ids=position_ids, **self._rotary_kwargs)
        return self.layers[0](hidden, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                              use_cache=cache is not None, position_embeddings=position_embeddings)


def save_head(head: DraftHead, directory: str | Path, metadata: dict | None = None) -> Path:
    """Save as `model.safetensors` (EAGLE key layout) + `config.json`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    cfg = head.config
    config = {"architectures": ["TapsDraftHead"], "model_type": cfg.model_type, "hidden_size": cfg.hidden_size,
              "fc_bias": head.fc_bias, "input_norm": head.input_norm,
              "draft_vocab_size": None if head.draft_vocab is None else head.draft_vocab.numel(), **(metadata or {})}
    config.update({k: getattr(cfg, k, None) for k in _OVERRIDABLE})
    atomic_write(out / HEAD_WEIGHTS, lambda tmp: save_file(state, tmp))
    write_json(out / HEAD_CONFIG, config)
    return out


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if path.is_file():
        weights, config_file = path, path.parent / HEAD_CONFIG
    elif path.is_dir():
        candidates = [path / HEAD_WEIGHTS, path / "pytorch_model.bin"]
        weights = next((c for c in candidates if c.exists()), None)
        if weights is None:
            raise ValueError(f"no {HEAD_WEIGHTS} or pytorch_model.bin in head directory {path}")
        config_file = path / HEAD_CONFIG
    else:
        raise ValueError(f"draft head not found: {path}")
    if weights.suffix == ".safetensors":
        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}: invalid JSON ({e})") from e
    return state, config


def head_method(path: str | Path | None) -> str:
    """The training method a checkpoint records (eagle2 when it says nothing; random for no checkpoint)."""
    if path is None:
        return "random"
    config = Path(path) / "config.json"
    return json.loads(config.read_text()).get("method", "eagle2") if config.exists() else "eagle2"


def load_head(path: str | Path, model: PreTrainedModel) -> DraftHead:
    """Load a TAPS, EAGLE or HASS head checkpoint for `model` (a directory or a weights file)."""
    state, config = _read_checkpoint(Path(path))
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    hidden = model.config.hidden_size
    ckpt_hidden = config.get("hidden_size")
    if "fc.weight" not in state:
        raise ValueError(f"{path}: no fc.weight; not an EAGLE-style draft head checkpoint")
    fc_shape = tuple(state["fc.weight"].shape)
    if (ckpt_hidden is not None and ckpt_hidden != hidden) or fc_shape != (hidden, 2 * hidden):
        raise ValueError(f"{path}: head hidden size {ckpt_hidden or fc_shape[0]} does not match the target's "
                         f"hidden size {hidden}")
    head = DraftHead.for_target(model, overrides=config, fc_bias="fc.bias" in state,
                                input_norm="layers.0.input_layernorm.weight" in state)
    d2t = state.pop(D2T, None)
    expected = set(head.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit a {head.config.model_type} head; "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    for key, tensor in head.state_dict().items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}")
    head.load_state_dict(state)
    if d2t is not None:
        try:
            head.set_draft_vocab(d2t.long() + torch.arange(d2t.numel()))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    return head.to(device=model.device, dtype=model.dtype).eval().requires_grad_(False)


def weights_digest(path: str | Path | None) -> str | None:
    """A saved head's weights by content (None: no head there), to tell a replaced head from the one before."""
    file = Path(path) / HEAD_WEIGHTS if path is not None else None
    return hashlib.sha256(file.read_bytes()).hexdigest()[:16] if file is not None and file.exists() else None


def _weights(a: DraftHead, b: DraftHead) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    sa, sb = ({k: v for k, v in h.state_dict().items() if k != D2T} for h in (a, b))
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("heads have different layouts and cannot be averaged")
    return sa, sb


def weight_distance(a: DraftHead, b: DraftHead) -> float:
    """||a - b|| / mean(||a||, ||b||) over all trained weights: how far apart two parents of an average are (the
    averaging study asks whether parents from one start stay close enough to interpolate)."""
    sa, sb = _weights(a, b)
    apart = _norm(sa[k].float() - sb[k].float() for k in sa)
    return float(2 * apart / (_norm(sa.values()) + _norm(sb.values())))


def _norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((t.float() ** 2).sum() for t in tensors))


def average_heads(a: DraftHead, b: DraftHead, alpha: float) -> DraftHead:
    """Weight interpolation `(1 - alpha) * a + alpha * b` (the paper's checkpoint-averaging baseline)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    sa, sb = _weights(a, b)
    mixed = copy.deepcopy(a)
    mixed.set_draft_vocab(None)
    mixed.load_state_dict({k: ((1 - alpha) * sa[k].float() + alpha * sb[k].float()).to(sa[k].dtype) for k in sa})
    vocab_a, vocab_b = a.draft_vocab, b.draft_vocab
    if vocab_a is not None and vocab_b is not None:   # draft from either parent's tokens
        mixed.set_draft_vocab(torch.cat([vocab_a, vocab_b[~torch.isin(vocab_b, vocab_a)]]).cpu())
    return mixed
