"""What decoding needs to know about a target's text format, without its weights.

The decoding loop renders prompts, stops on end-of-sequence and checks lengths; the router runs that loop while
the verifier replicas hold the model, so the router loads only this: the tokenizer (with its chat template), the
EOS ids, the vocabulary and hidden sizes and the context length.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PretrainedConfig

Prompt = str | list[dict] | list[int]


def eos_ids(generation_config: GenerationConfig | None, config: PretrainedConfig, tokenizer) -> frozenset[int]:
    """End-of-sequence ids: the generation config's, else the model config's, else the tokenizer's."""
    ids = generation_config.eos_token_id if generation_config is not None else None
    if ids is None:
        ids = getattr(config, "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return frozenset()
    return frozenset(ids) if isinstance(ids, (list, tuple, set)) else frozenset({ids})


@dataclass(frozen=True)
class PromptFormat:
    name: str
    tokenizer: object | None
    eos_token_ids: frozenset[int]
    vocab_size: int
    hidden_size: int
    context_length: int | None        # max_position_embeddings; None when the config does not say

    @classmethod
    def from_config(cls, name: str, config: PretrainedConfig, tokenizer,
                    generation_config: GenerationConfig | None) -> "PromptFormat":
        text = config.get_text_config()
        return cls(name, tokenizer, eos_ids(generation_config, config, tokenizer), text.vocab_size, text.hidden_size,
                   getattr(text, "max_position_embeddings", None))

    @classmethod
    def load(cls, location: str, name: str) -> "PromptFormat":
        """From a model directory or Hub id, reading no weights."""
        config = AutoConfig.from_pretrained(location)
        try:
            generation = GenerationConfig.from_pretrained(location)
        except OSError:  # no generation_config.json: the model config's own ids apply
            generation = None
        return cls.from_config(name, config, AutoTokenizer.from_pretrained(location), generation)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids for a raw string, chat messages (rendered with the chat template), or ids as given."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty")
            ids = self._tokenizer()(prompt, add_special_tokens=True)["input_ids"]
        elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            for i, message in enumerate(prompt):
                if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                    raise ValueError(f"message {i} needs string 'role' and 'content' fields")
            if not any(m["content"].strip() for m in prompt):
                raise ValueError("all messages are empty")
            if self._tokenizer().chat_template is None:
                raise ValueError(f"target {self.name} has no chat template; pass a plain prompt string")
            ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"]
        elif isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            ids = list(prompt)
            if any(t < 0 or t >= self.vocab_size for t in ids):
                raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        else:
            raise ValueError("prompt must be a non-empty string, a list of chat messages, or a list of token ids")
        if not ids:
            raise ValueError("prompt is empty")
        return ids

    def user_prompt(self, text: str) -> Prompt:
        """A user's question as this target is asked it: one chat message, or, for a base model without a chat
        template, the text followed by the blank line after which it continues (as its drafters are trained:
        training/data.py `render_plain`)."""
        if self.tokenizer is not None and self.tokenizer.chat_template is None:
            return text + "\n\n"
        return [{"role": "user", "content": text}]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if self.tokenizer is not None else ""

    def check_length(self, n_prompt: int, max_new_tokens: int, draft_depth: int) -> None:
        """ValueError unless the prompt, the answer and the deepest draft beyond it fit the context."""
        if self.context_length is not None and n_prompt + max_new_tokens + draft_depth > self.context_length:
            raise ValueError(f"prompt of {n_prompt} tokens + max_new_tokens {max_new_tokens} exceeds the target's "
                             f"context of {self.context_length} tokens")

    def _tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"target {self.name} has no tokenizer; pass token ids")
        return self.tokenizer
