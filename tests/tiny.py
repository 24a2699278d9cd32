"""Tiny random targets and heads for fast unit and property tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen3Config, Qwen3ForCausalLM

from taps_engine.head import DraftHead
from taps_engine.target import Target, from_model
from taps_engine.tree import DraftTree

EOS = 1
FIXTURES = Path(__file__).parent / "fixtures"
# where tiny targets compute: TAPS_TEST_DEVICE=cuda runs the engine tests on a GPU (the engine must not assume a CPU)
DEVICE = torch.device(os.environ.get("TAPS_TEST_DEVICE", "cpu"))


def on_test_device(model: PreTrainedModel) -> PreTrainedModel:
    """`model`, drawn on the CPU so that every device tests the same weights, moved to DEVICE."""
    return model.to(DEVICE)


def tiny_target(arch: str = "llama", vocab: int = 96, layers: int = 2, seed: int = 0,
                logit_scale: float = 1.0, embed_scale: float = 1.0, pack: bool = True) -> Target:
    """A random fp32 target; `logit_scale` sharpens its distributions, `embed_scale` its residual stream (which
    makes `oracle_head`'s un-normalised predictions confident)."""
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, eos_token_id=EOS,
                  bos_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    else:
        raise ValueError(arch)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
        model.model.embed_tokens.weight.mul_(embed_scale)
    model.generation_config.eos_token_id = EOS
    return from_model(on_test_device(model.float()), name=f"tiny-{arch}", pack=pack)


def oracle_head(target: Target, noise: float = 0.0, seed: int = 0) -> DraftHead:
    """For a 1-layer target: a head that re-runs that layer on the next token's embedding.

    Its predicted feature is the target's pre-norm hidden state (without the first token in context), whose
    argmax through the LM head matches the target's almost always; `noise` makes it imperfect.
    """
    model = target.model
    assert model.config.num_hidden_layers == 1
    head = DraftHead.for_target(model, input_norm=True)
    hidden = model.config.hidden_size
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[:, :hidden] = torch.eye(hidden, device=head.fc.weight.device)
        head.layers[0].load_state_dict(model.model.layers[0].state_dict())
        if noise:
            g = torch.Generator().manual_seed(seed)
            for p in head.parameters():
                p.add_(noise * p.abs().mean() * torch.randn(p.shape, generator=g).to(p.device))
    return head.eval()


def tiny_chat_target(arch: str, tokenizer) -> Target:
    """A tiny random target over a real tokenizer's vocabulary, so real chat data renders for it."""
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama" else \
        Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    return from_model(on_test_device(model.float()), tokenizer, name=f"tiny-{arch}")


class ContinuationProposer:
    """A test drafter that knows the target: it proposes the target's own greedy continuation (depth + 1 tokens)
    with a random sibling beside every node, so verification accepts long paths and must drop the siblings'
    rows from the KV cache. It sees the committed tokens as any proposer does; `first_token` is the prompt's
    first token, which proposers are never given."""

    def __init__(self, name: str, model, first_token: int, seed: int = 0) -> None:
        self.name, self.model, self.first_token = name, model, first_token
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []

    def extend(self, tokens, features) -> None:
        self.tokens += [int(t) for t in tokens]

    def prompt_agreement(self) -> float:
        return 1.0

    @torch.no_grad()
    def propose(self, settings) -> DraftTree:
        context = torch.tensor([[self.first_token, *self.tokens]])
        n = settings.depth + 1
        chain = self.model.generate(context, attention_mask=torch.ones_like(context), max_new_tokens=n,
                                    do_sample=False, eos_token_id=None)[0, context.shape[1]:].tolist()
        vocab = self.model.config.get_text_config().vocab_size
        tokens, parents, depths, scores = [], [], [], []
        for d, token in enumerate(chain):
            parent = 2 * (d - 1) if d else -1   # the previous chain node (chain nodes sit at even indices)
            sibling = int(torch.randint(0, vocab, (1,), generator=self.generator))
            tokens += [token, sibling]
            parents += [parent, parent]
            depths += [d + 1, d + 1]
            scores += [-0.1 * (d + 1), -0.1 * (d + 1) - 2.0]
        k = len(tokens)
        tree = DraftTree(tokens=torch.tensor(tokens), parents=torch.tensor(parents), depths=torch.tensor(depths),
                         scores=torch.tensor(scores), entropies=torch.zeros(k),
                         sources=torch.zeros(k, dtype=torch.long))
        return tree.top(settings.max_nodes)
