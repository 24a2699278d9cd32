"""The part of the target a drafter replica needs: its input embedding and LM head.

A draft head borrows the target's frozen input embedding and LM head and nothing else, so a drafter replica loads
just those two matrices (about 2 GB for Llama-3-8B instead of 16 GB). The model is built on the meta device, where
the other parameters have shapes but no storage. (The router needs even less: `taps_engine.prompt.PromptFormat`.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from taps_engine.settings import default_device, resolve_dtype
from taps_engine.target import Target, load_target, resolve_target_path


def _meta_model(location: str):
    config = AutoConfig.from_pretrained(location)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def _weight_files(directory: Path) -> dict[str, Path]:
    """Checkpoint tensor name -> safetensors file, for a single-file or sharded checkpoint."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        return {name: directory / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = directory / "model.safetensors"
    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


def load_embedding_target(spec: str, dtype: str = "auto") -> Target:
    """A `Target` whose input embedding and LM head hold the checkpoint's weights and whose other parameters stay
    on the meta device: all a draft head needs. Targets that are not local safetensors checkpoints (Hub ids) load
    whole."""
    location = Path(resolve_target_path(spec))
    if not location.is_dir() or not any(location.glob("*.safetensors")):
        return load_target(spec, dtype=dtype)
    device = default_device()
    torch_dtype = resolve_dtype(dtype, device)
    model = _meta_model(str(location))
    files = _weight_files(location)
    names = {id(p): n for n, p in model.named_parameters()}
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        name = names.get(id(module.weight))
        if name is None:  # an LM head tied to the embedding: loading the embedding loaded it
            continue
        if name not in files:
            raise ValueError(f"{location}: checkpoint has no tensor {name}")
        with safe_open(str(files[name]), framework="pt", device="cpu") as f:
            tensor = f.get_tensor(name)
        module.weight = nn.Parameter(tensor.to(device=device, dtype=torch_dtype), requires_grad=False)
    if model.config.tie_word_embeddings:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return Target(model=model, tokenizer=None, name=spec)
