"""A public GenerateRequest checked and turned into what the decoding loop takes, or a gRPC status for the client.

Everything a client can get wrong is caught here, before any remote work starts, and named in the status details:
INVALID_ARGUMENT for malformed input (no or several inputs, an empty or over-long prompt, bad sampling values, an
unknown policy or drafter) and RESOURCE_EXHAUSTED for a max_new_tokens above the server's cap (a quota, not a
malformed request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from taps_engine.acceptance import SamplingParams
from taps_engine.policies import POLICY_SPECS, PolicySpec, policy_spec
from taps_engine.prompt import PromptFormat

from .assignments import assignment_key, first_turn
from .config import ServeConfig
from .protos_gen.taps.v1 import taps_pb2 as pb

ROLES = ("system", "user", "assistant")
# policies that take a `drafter` from the request (the others draft with every drafter each step, plain with none)
DRAFTER_POLICIES = tuple(spec.name for spec in POLICY_SPECS if spec.takes_drafter)


class RequestError(Exception):
    """A request the server refuses, with the gRPC status code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # Ray pickles an error raised in a stream on its way to the gRPC proxy
        return type(self), (self.code, self.message)


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class ParsedRequest:
    prompt_ids: list[int]
    policy: PolicySpec
    drafter: str | None        # the client's drafter (single) or forced assignment (sticky, probe)
    params: SamplingParams
    assignment_key: str | None  # sticky, probe: the conversation's key in the assignment cache


def _prompt(request: pb.GenerateRequest, prompt_format: PromptFormat) -> tuple[list[int], tuple[str, str] | None]:
    """Token ids, and the (system, first user turn) identifying the conversation when there is text."""
    given = [name for name, present in (("prompt", bool(request.prompt)), ("messages", bool(request.messages)),
                                        ("prompt_token_ids", bool(request.prompt_token_ids))) if present]
    if len(given) > 1:
        raise invalid(f"give exactly one of prompt, messages or prompt_token_ids, got {' and '.join(given)}")
    if not given:
        raise invalid("prompt is empty: give prompt, messages or prompt_token_ids")
    if request.raw and given[0] != "prompt":
        raise invalid("raw applies to a text prompt only")
    if request.system and (request.raw or given[0] == "prompt_token_ids"):
        raise invalid("system needs the chat template: it cannot be combined with raw or prompt_token_ids")
    for i, m in enumerate(request.messages):
        if m.role not in ROLES:
            raise invalid(f"message {i} has role {m.role!r}; use one of {', '.join(ROLES)}")
    if given[0] == "prompt_token_ids":
        prompt: str | list = list(request.prompt_token_ids)
        conversation = None
    elif request.raw:
        prompt, conversation = request.prompt, ("", request.prompt)
    else:
        messages = [{"role": m.role, "content": m.content} for m in request.messages] or \
                   [{"role": "user", "content": request.prompt}]
        if request.system:
            messages = [{"role": "system", "content": request.system}] + messages
        prompt, conversation = messages, first_turn(messages)
    try:
        return prompt_format.encode(prompt), conversation
    except ValueError as e:
        raise invalid(str(e)) from e


def _params(request: pb.GenerateRequest, config: ServeConfig) -> SamplingParams:
    limits = config.router
    max_new = request.max_new_tokens if request.HasField("max_new_tokens") else limits.default_max_new_tokens
    if max_new > limits.max_new_tokens_cap:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"max_new_tokens {max_new} exceeds this server's cap of {limits.max_new_tokens_cap}")
    temperature = request.temperature if request.HasField("temperature") else 0.0
    top_p = request.top_p if request.HasField("top_p") else 1.0
    if not (math.isfinite(temperature) and math.isfinite(top_p)):
        raise invalid("temperature and top_p must be finite numbers")
    try:
        return SamplingParams(max_new_tokens=max_new, temperature=temperature, top_p=top_p, top_k=request.top_k,
                              seed=request.seed, stop_on_eos=not request.ignore_eos)
    except ValueError as e:
        raise invalid(str(e)) from e


def parse_request(request: pb.GenerateRequest, prompt_format: PromptFormat, config: ServeConfig) -> ParsedRequest:
    try:
        policy = policy_spec(request.policy or config.router.default_policy)
    except ValueError as e:
        raise invalid(str(e)) from e
    drafter = request.drafter or None
    if drafter is not None:
        if drafter not in config.drafters:
            raise invalid(f"unknown drafter {drafter!r}; available: {', '.join(config.drafters)}")
        if not policy.takes_drafter:
            raise invalid(f"drafter applies to the {' and '.join(DRAFTER_POLICIES)} policies, not "
                          f"{request.policy or config.router.default_policy!r}")
    params = _params(request, config)
    prompt_ids, conversation = _prompt(request, prompt_format)
    if len(prompt_ids) > config.router.max_prompt_tokens:
        raise invalid(f"prompt has {len(prompt_ids)} tokens; this server accepts at most "
                      f"{config.router.max_prompt_tokens}")
    key = None
    if policy.assignable and (request.conversation_id or conversation is not None):
        system, first_user = conversation or ("", "")
        key = assignment_key(config.target, conversation_id=request.conversation_id, system=system,
                             first_user=first_user)
    return ParsedRequest(prompt_ids, policy, drafter, params, key)
