"""Shared pieces of the serving tests: a tiny target on disk with two heads, in-process handles, bad requests,
polling."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from services.protos_gen.taps.v1 import taps_pb2 as pb
from taps_engine.head import DraftHead, save_head
from taps_engine.target import from_model
from tiny import oracle_head

PROMPT = "What is 2 + 3? Explain."
TREE = {"total_tokens": 8, "depth": 3, "top_k": 2}


def save_serving_models(root: Path, tokenizer) -> dict:
    """A 1-layer random Llama over the real SmolLM2 tokenizer (so prompts render with its chat template), saved
    with the tokenizer, and two heads: `a` re-runs the target's layer (its drafts are mostly accepted, so steps
    commit several tokens) and `b` is random (mostly rejected)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharp distributions: greedy outputs are far from ties
        model.lm_head.weight.mul_(6.0)
        model.model.embed_tokens.weight.mul_(60.0)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    target_dir = root / "target"
    model.save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)
    target = from_model(model.float(), tokenizer)
    heads = {"a": save_head(oracle_head(target), root / "head-a"),
             "b": save_head(DraftHead.random(target.model, seed=3), root / "head-b")}
    return {"target": str(target_dir), "heads": {name: str(path) for name, path in heads.items()}}


class _Response:
    def __init__(self, call) -> None:
        self.call = call

    def result(self, timeout_s=None):
        return self.call()

    def cancel(self) -> None:
        pass


_REQUESTS = {"Info": pb.InfoRequest, "Propose": pb.ProposeRequest, "PromptAgreement": pb.PromptAgreementRequest,
             "Features": pb.FeaturesRequest,
             "Release": pb.ReleaseRequest, "Prefill": pb.PrefillRequest, "Verify": pb.VerifyRequest,
             "Draft": pb.DraftRequest}


class InProcessHandle:
    """A DeploymentHandle stand-in calling a server object directly, with the same bytes in and out."""

    def __init__(self, server, method: str | None = None, fail: bool = False) -> None:
        self.server, self.method, self.fail = server, method, fail
        self.calls: list[str] = []

    def options(self, method_name: str | None = None, **_) -> "InProcessHandle":
        view = InProcessHandle(self.server, method_name or self.method, self.fail)
        view.calls = self.calls
        return view

    def remote(self, data: bytes) -> _Response:
        self.calls.append(self.method)

        def run() -> bytes:
            if self.fail:
                raise RuntimeError("replica gone")
            request = _REQUESTS[self.method].FromString(data)
            return getattr(self.server, self.method)(request).SerializeToString()
        return _Response(run)


def bad_requests(cap: int, max_prompt: int) -> list[tuple[str, dict, grpc.StatusCode]]:
    """(case, request fields, expected status) for every input the router must refuse."""
    invalid, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    return [
        ("empty prompt", {}, invalid),
        ("blank prompt", {"prompt": "   ", "raw": True}, invalid),
        ("two inputs", {"prompt": PROMPT, "prompt_token_ids": [1, 2]}, invalid),
        ("bad role", {"messages": [pb.ChatMessage(role="robot", content="hi")]}, invalid),
        ("token out of vocabulary", {"prompt_token_ids": [10**9]}, invalid),
        ("negative temperature", {"prompt": PROMPT, "temperature": -1.0}, invalid),
        ("nan temperature", {"prompt": PROMPT, "temperature": float("nan")}, invalid),
        ("top_p zero", {"prompt": PROMPT, "top_p": 0.0}, invalid),
        ("top_p above one", {"prompt": PROMPT, "top_p": 1.5}, invalid),
        ("negative top_k", {"prompt": PROMPT, "top_k": -1}, invalid),
        ("unknown policy", {"prompt": PROMPT, "policy": "fastest"}, invalid),
        ("unknown drafter", {"prompt": PROMPT, "policy": "single", "drafter": "physics"}, invalid),
        ("drafter with a per-step policy", {"prompt": PROMPT, "policy": "merged", "drafter": "a"}, invalid),
        ("zero max_new_tokens", {"prompt": PROMPT, "max_new_tokens": 0}, invalid),
        ("prompt too long", {"prompt_token_ids": [5] * (max_prompt + 1)}, invalid),
        ("max_new_tokens above the cap", {"prompt": PROMPT, "max_new_tokens": cap + 1}, exhausted),
    ]


def wait_until(condition, timeout_s: float = 20.0, interval_s: float = 0.2) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())
