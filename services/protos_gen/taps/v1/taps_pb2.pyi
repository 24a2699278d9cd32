from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_EOS: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_EOS: FinishReason
FINISH_REASON_LENGTH: FinishReason

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TreeSettings(_message.Message):
    __slots__ = ("total_tokens", "depth", "top_k", "cost_aware", "stop_below")
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COST_AWARE_FIELD_NUMBER: _ClassVar[int]
    STOP_BELOW_FIELD_NUMBER: _ClassVar[int]
    total_tokens: int
    depth: int
    top_k: int
    cost_aware: bool
    stop_below: float
    def __init__(self, total_tokens: _Optional[int] = ..., depth: _Optional[int] = ..., top_k: _Optional[int] = ..., cost_aware: _Optional[bool] = ..., stop_below: _Optional[float] = ...) -> None: ...

class DraftTree(_message.Message):
    __slots__ = ("tokens", "parents", "depths", "scores", "entropies", "sources")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    DEPTHS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ENTROPIES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    tokens: Tensor
    parents: Tensor
    depths: Tensor
    scores: Tensor
    entropies: Tensor
    sources: Tensor
    def __init__(self, tokens: _Optional[_Union[Tensor, _Mapping]] = ..., parents: _Optional[_Union[Tensor, _Mapping]] = ..., depths: _Optional[_Union[Tensor, _Mapping]] = ..., scores: _Optional[_Union[Tensor, _Mapping]] = ..., entropies: _Optional[_Union[Tensor, _Mapping]] = ..., sources: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class DrafterInfo(_message.Message):
    __slots__ = ("name", "method", "target", "hidden_size", "path", "draft_forwards", "drafted_steps", "draft_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    DRAFTED_STEPS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    method: str
    target: str
    hidden_size: int
    path: str
    draft_forwards: int
    drafted_steps: int
    draft_seconds: float
    def __init__(self, name: _Optional[str] = ..., method: _Optional[str] = ..., target: _Optional[str] = ..., hidden_size: _Optional[int] = ..., path: _Optional[str] = ..., draft_forwards: _Optional[int] = ..., drafted_steps: _Optional[int] = ..., draft_seconds: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "messages", "prompt_token_ids", "system", "raw", "policy", "drafter", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "ignore_eos", "conversation_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    system: str
    raw: bool
    policy: str
    drafter: str
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    ignore_eos: bool
    conversation_id: str
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., system: _Optional[str] = ..., raw: _Optional[bool] = ..., policy: _Optional[str] = ..., drafter: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ..., ignore_eos: _Optional[bool] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("drafter", "from_assignment_cache", "client_assigned", "scores", "unavailable")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    FROM_ASSIGNMENT_CACHE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    drafter: str
    from_assignment_cache: bool
    client_assigned: bool
    scores: _containers.ScalarMap[str, float]
    unavailable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, drafter: _Optional[str] = ..., from_assignment_cache: _Optional[bool] = ..., client_assigned: _Optional[bool] = ..., scores: _Optional[_Mapping[str, float]] = ..., unavailable: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerationStats(_message.Message):
    __slots__ = ("prompt_tokens", "new_tokens", "n_steps", "mean_acceptance_length", "position_acceptance", "tokens_per_s", "seconds", "drafter_selections", "draft_seconds", "verify_seconds")
    class DrafterSelectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    N_STEPS_FIELD_NUMBER: _ClassVar[int]
    MEAN_ACCEPTANCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    POSITION_ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    new_tokens: int
    n_steps: int
    mean_acceptance_length: float
    position_acceptance: _containers.RepeatedScalarFieldContainer[float]
    tokens_per_s: float
    seconds: float
    drafter_selections: _containers.ScalarMap[str, int]
    draft_seconds: float
    verify_seconds: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., new_tokens: _Optional[int] = ..., n_steps: _Optional[int] = ..., mean_acceptance_length: _Optional[float] = ..., position_acceptance: _Optional[_Iterable[float]] = ..., tokens_per_s: _Optional[float] = ..., seconds: _Optional[float] = ..., drafter_selections: _Optional[_Mapping[str, int]] = ..., draft_seconds: _Optional[float] = ..., verify_seconds: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "token_ids", "finish_reason", "policy", "decision", "stats")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    finish_reason: FinishReason
    policy: str
    decision: Decision
    stats: GenerationStats
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., policy: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., stats: _Optional[_Union[GenerationStats, _Mapping]] = ...) -> None: ...

class StepStats(_message.Message):
    __slots__ = ("accepted", "acceptance_length", "drafters", "tree_size")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DRAFTERS_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    acceptance_length: int
    drafters: _containers.RepeatedScalarFieldContainer[str]
    tree_size: int
    def __init__(self, accepted: _Optional[int] = ..., acceptance_length: _Optional[int] = ..., drafters: _Optional[_Iterable[str]] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("token_ids", "text", "step", "finish_reason", "policy", "decision", "stats")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    step: StepStats
    finish_reason: FinishReason
    policy: str
    decision: Decision
    stats: GenerationStats
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., step: _Optional[_Union[StepStats, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., policy: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., stats: _Optional[_Union[GenerationStats, _Mapping]] = ...) -> None: ...

class ListDraftersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDraftersResponse(_message.Message):
    __slots__ = ("target", "drafters", "policies", "default_policy", "max_new_tokens_cap", "max_prompt_tokens", "tree")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DRAFTERS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_CAP_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    target: str
    drafters: _containers.RepeatedCompositeFieldContainer[DrafterInfo]
    policies: _containers.RepeatedScalarFieldContainer[str]
    default_policy: str
    max_new_tokens_cap: int
    max_prompt_tokens: int
    tree: TreeSettings
    def __init__(self, target: _Optional[str] = ..., drafters: _Optional[_Iterable[_Union[DrafterInfo, _Mapping]]] = ..., policies: _Optional[_Iterable[str]] = ..., default_policy: _Optional[str] = ..., max_new_tokens_cap: _Optional[int] = ..., max_prompt_tokens: _Optional[int] = ..., tree: _Optional[_Union[TreeSettings, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("verify_costs",)
    VERIFY_COSTS_FIELD_NUMBER: _ClassVar[int]
    verify_costs: bool
    def __init__(self, verify_costs: _Optional[bool] = ...) -> None: ...

class PairUpdate(_message.Message):
    __slots__ = ("session_id", "drafter", "offset", "tokens", "features")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    drafter: str
    offset: int
    tokens: _containers.RepeatedScalarFieldContainer[int]
    features: Tensor
    def __init__(self, session_id: _Optional[str] = ..., drafter: _Optional[str] = ..., offset: _Optional[int] = ..., tokens: _Optional[_Iterable[int]] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class StateMiss(_message.Message):
    __slots__ = ("resend_from", "reason")
    RESEND_FROM_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    resend_from: int
    reason: str
    def __init__(self, resend_from: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("update", "tree")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    update: PairUpdate
    tree: TreeSettings
    def __init__(self, update: _Optional[_Union[PairUpdate, _Mapping]] = ..., tree: _Optional[_Union[TreeSettings, _Mapping]] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ("tree", "miss")
    TREE_FIELD_NUMBER: _ClassVar[int]
    MISS_FIELD_NUMBER: _ClassVar[int]
    tree: DraftTree
    miss: StateMiss
    def __init__(self, tree: _Optional[_Union[DraftTree, _Mapping]] = ..., miss: _Optional[_Union[StateMiss, _Mapping]] = ...) -> None: ...

class PromptAgreementRequest(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: PairUpdate
    def __init__(self, update: _Optional[_Union[PairUpdate, _Mapping]] = ...) -> None: ...

class PromptAgreementResponse(_message.Message):
    __slots__ = ("agreement", "miss")
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MISS_FIELD_NUMBER: _ClassVar[int]
    agreement: float
    miss: StateMiss
    def __init__(self, agreement: _Optional[float] = ..., miss: _Optional[_Union[StateMiss, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class VerifierInfo(_message.Message):
    __slots__ = ("target", "vocab_size", "hidden_size", "max_position_embeddings", "eos_token_ids", "dtype", "sessions", "verify_forwards", "verified_steps", "verify_seconds", "verify_ms", "verify_costs_error")
    class VerifyMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITION_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_STEPS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_COSTS_ERROR_FIELD_NUMBER: _ClassVar[int]
    target: str
    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    sessions: int
    verify_forwards: int
    verified_steps: int
    verify_seconds: float
    verify_ms: _containers.ScalarMap[int, float]
    verify_costs_error: str
    def __init__(self, target: _Optional[str] = ..., vocab_size: _Optional[int] = ..., hidden_size: _Optional[int] = ..., max_position_embeddings: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., sessions: _Optional[int] = ..., verify_forwards: _Optional[int] = ..., verified_steps: _Optional[int] = ..., verify_seconds: _Optional[float] = ..., verify_ms: _Optional[_Mapping[int, float]] = ..., verify_costs_error: _Optional[str] = ...) -> None: ...

class Acceptance(_message.Message):
    __slots__ = ("sampling", "rng_state")
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    RNG_STATE_FIELD_NUMBER: _ClassVar[int]
    sampling: SamplingParams
    rng_state: bytes
    def __init__(self, sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., rng_state: _Optional[bytes] = ...) -> None: ...

class PrefillRequest(_message.Message):
    __slots__ = ("session_id", "prompt_ids")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session_id: _Optional[str] = ..., prompt_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class PrefillResponse(_message.Message):
    __slots__ = ("features", "logits")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    features: Tensor
    logits: Tensor
    def __init__(self, features: _Optional[_Union[Tensor, _Mapping]] = ..., logits: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("session_id", "offset", "tokens", "tree", "accept", "draft_next")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_NEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    offset: int
    tokens: _containers.RepeatedScalarFieldContainer[int]
    tree: DraftTree
    accept: Acceptance
    draft_next: _containers.RepeatedCompositeFieldContainer[DraftAsk]
    def __init__(self, session_id: _Optional[str] = ..., offset: _Optional[int] = ..., tokens: _Optional[_Iterable[int]] = ..., tree: _Optional[_Union[DraftTree, _Mapping]] = ..., accept: _Optional[_Union[Acceptance, _Mapping]] = ..., draft_next: _Optional[_Iterable[_Union[DraftAsk, _Mapping]]] = ...) -> None: ...

class DraftAsk(_message.Message):
    __slots__ = ("drafter", "tree")
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    drafter: str
    tree: TreeSettings
    def __init__(self, drafter: _Optional[str] = ..., tree: _Optional[_Union[TreeSettings, _Mapping]] = ...) -> None: ...

class NamedTree(_message.Message):
    __slots__ = ("drafter", "tree")
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    drafter: str
    tree: DraftTree
    def __init__(self, drafter: _Optional[str] = ..., tree: _Optional[_Union[DraftTree, _Mapping]] = ...) -> None: ...

class Verified(_message.Message):
    __slots__ = ("features", "path", "bonus_token", "rng_state", "caught_up", "next_trees")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BONUS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RNG_STATE_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    NEXT_TREES_FIELD_NUMBER: _ClassVar[int]
    features: Tensor
    path: _containers.RepeatedScalarFieldContainer[int]
    bonus_token: int
    rng_state: bytes
    caught_up: bool
    next_trees: _containers.RepeatedCompositeFieldContainer[NamedTree]
    def __init__(self, features: _Optional[_Union[Tensor, _Mapping]] = ..., path: _Optional[_Iterable[int]] = ..., bonus_token: _Optional[int] = ..., rng_state: _Optional[bytes] = ..., caught_up: _Optional[bool] = ..., next_trees: _Optional[_Iterable[_Union[NamedTree, _Mapping]]] = ...) -> None: ...

class DraftRequest(_message.Message):
    __slots__ = ("session_id", "offset", "tokens", "asks", "agreement")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    offset: int
    tokens: _containers.RepeatedScalarFieldContainer[int]
    asks: _containers.RepeatedCompositeFieldContainer[DraftAsk]
    agreement: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., offset: _Optional[int] = ..., tokens: _Optional[_Iterable[int]] = ..., asks: _Optional[_Iterable[_Union[DraftAsk, _Mapping]]] = ..., agreement: _Optional[_Iterable[str]] = ...) -> None: ...

class Drafted(_message.Message):
    __slots__ = ("trees", "agreement", "error")
    class AgreementEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TREES_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    trees: _containers.RepeatedCompositeFieldContainer[NamedTree]
    agreement: _containers.ScalarMap[str, float]
    error: str
    def __init__(self, trees: _Optional[_Iterable[_Union[NamedTree, _Mapping]]] = ..., agreement: _Optional[_Mapping[str, float]] = ..., error: _Optional[str] = ...) -> None: ...

class DraftResponse(_message.Message):
    __slots__ = ("drafted", "miss")
    DRAFTED_FIELD_NUMBER: _ClassVar[int]
    MISS_FIELD_NUMBER: _ClassVar[int]
    drafted: Drafted
    miss: StateMiss
    def __init__(self, drafted: _Optional[_Union[Drafted, _Mapping]] = ..., miss: _Optional[_Union[StateMiss, _Mapping]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("verified", "miss")
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    MISS_FIELD_NUMBER: _ClassVar[int]
    verified: Verified
    miss: StateMiss
    def __init__(self, verified: _Optional[_Union[Verified, _Mapping]] = ..., miss: _Optional[_Union[StateMiss, _Mapping]] = ...) -> None: ...

class FeaturesRequest(_message.Message):
    __slots__ = ("token_ids", "start")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    start: int
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., start: _Optional[int] = ...) -> None: ...

class FeaturesResponse(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: Tensor
    def __init__(self, features: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
