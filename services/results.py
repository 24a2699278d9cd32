"""Engine results -> public protobuf messages: stream chunks with text deltas, the final stats and decision.

Streamed text must concatenate to exactly the text a unary call returns. Byte-level tokenizers can split one
character across tokens, so deltas come from decoding the whole answer so far and a delta ending in an incomplete
character (U+FFFD) is held back until the next token completes it; the final chunk flushes the rest.
"""

from __future__ import annotations

from taps_engine.decoding import GenerationResult, StepRecord
from taps_engine.metrics import acceptance_rate_by_depth, drafter_step_counts
from taps_engine.policies import Decision

from .protos_gen.taps.v1 import taps_pb2 as pb

FINISH = {"eos": pb.FINISH_REASON_EOS, "length": pb.FINISH_REASON_LENGTH}


class TextDeltas:
    """Incremental detokenization of one answer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.emitted = ""

    def add(self, tokens: list[int]) -> str:
        self.tokens.extend(tokens)
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.emitted):
            return ""
        delta, self.emitted = text[len(self.emitted):], text
        return delta

    def finish(self, text: str) -> str:
        """The rest of the final `text` (which the emitted deltas are a prefix of)."""
        delta = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text
        return delta


def step_stats(step: StepRecord) -> pb.StepStats:
    return pb.StepStats(accepted=step.accepted, acceptance_length=step.acceptance_length, drafters=step.drafters,
                        tree_size=step.tree_size)


def decision_proto(decision: Decision, from_cache: bool, client_assigned: bool) -> pb.Decision:
    return pb.Decision(drafter=decision.drafter or "", from_assignment_cache=from_cache,
                       client_assigned=client_assigned, scores=decision.scores,
                       unavailable=decision.unavailable)


def generation_stats(result: GenerationResult) -> pb.GenerationStats:
    by_depth = acceptance_rate_by_depth([result])
    selections, _ = drafter_step_counts([result])
    return pb.GenerationStats(prompt_tokens=len(result.prompt_ids), new_tokens=len(result.token_ids),
                              n_steps=len(result.steps), mean_acceptance_length=result.tau,
                              position_acceptance=[by_depth[d] for d in sorted(by_depth)],
                              tokens_per_s=result.tokens_per_s, seconds=result.seconds,
                              drafter_selections=dict(selections),
                              draft_seconds=sum(s.draft_s for s in result.steps),
                              verify_seconds=sum(s.verify_s for s in result.steps))


def response_from_chunks(chunks: list[pb.GenerateChunk]) -> pb.GenerateResponse:
    """The unary answer: every chunk's tokens and text, with the final chunk's summary."""
    final = chunks[-1]
    return pb.GenerateResponse(text="".join(c.text for c in chunks),
                               token_ids=[t for c in chunks for t in c.token_ids],
                               finish_reason=final.finish_reason, policy=final.policy, decision=final.decision,
                               stats=final.stats)
