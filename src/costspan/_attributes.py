"""Every span and metric attribute name costspan writes or reads, in one place.

The GenAI names follow semantic conventions v1.41.0 (``docs/gen-ai/gen-ai-spans.md`` and
``gen-ai-metrics.md`` at that tag). ``opentelemetry-semantic-conventions`` still ships them but
marks each one deprecated ("moved to semantic-conventions-genai"), so costspan keeps its own
string constants instead of importing those.
"""

from typing import Final

# -- GenAI span attributes (v1.41.0) ------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"

GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"

GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"

GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
# The unreleased semantic-conventions-genai repo renames cache_creation to cache_write (PR #440)
# and the official genai-openai instrumentation already emits it: read both, write the released.
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"

GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"

GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"

# Read, never written: the provider attribute of conventions before v1.37 (instrumentations that
# still emit it are priced too).
GEN_AI_SYSTEM: Final = "gen_ai.system"

# -- OpenAI-specific (openai.md, v1.41.0) -------------------------------------------------------
OPENAI_API_TYPE: Final = "openai.api.type"
OPENAI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"
OPENAI_RESPONSE_SYSTEM_FINGERPRINT: Final = "openai.response.system_fingerprint"

# -- general ------------------------------------------------------------------------------------
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
ERROR_TYPE_OTHER: Final = "_OTHER"

# -- values -------------------------------------------------------------------------------------
OP_CHAT: Final = "chat"
OP_TEXT_COMPLETION: Final = "text_completion"
OP_EMBEDDINGS: Final = "embeddings"
API_CHAT_COMPLETIONS: Final = "chat_completions"
API_RESPONSES: Final = "responses"

# -- costspan's own -----------------------------------------------------------------------------
COSTSPAN_USAGE_MISSING: Final = "costspan.usage.missing"
"""True when the provider never reported usage for a call that was sent (a cut stream, a server
that ignores ``include_usage``); the token attributes are then absent or estimated."""
COSTSPAN_STREAM_OUTCOME: Final = "costspan.stream.outcome"
"""How a stream ended: ``completed``, ``closed`` (by the caller before the end), ``error`` or
``abandoned`` (garbage-collected unconsumed)."""
COSTSPAN_STREAM_CHUNKS: Final = "costspan.stream.chunks"
COSTSPAN_STREAM_OUTPUT_CHARS: Final = "costspan.stream.output_chars"
"""Characters of generated text seen in a stream: the basis for an estimate when usage is
missing."""
COSTSPAN_STREAM_USAGE_INJECTED: Final = "costspan.stream.usage_injected"
"""True when costspan added ``stream_options.include_usage`` to a chat stream request."""

# -- metrics ------------------------------------------------------------------------------------
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"

TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

# -- cost (semantic-conventions-genai PR #443, open) ---------------------------------------------
GEN_AI_USAGE_COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
GEN_AI_USAGE_COST_SOURCE: Final = "gen_ai.usage.cost.source"
OPENLIT_USAGE_COST: Final = "gen_ai.usage.cost"
"""OpenLIT's (non-standard) cost attribute, added when ``openlit_cost_attribute`` is on."""

COSTSPAN_COST_INPUT: Final = "costspan.cost.input_usd"
"""USD for input tokens read neither from nor into the cache."""
COSTSPAN_COST_CACHED_INPUT: Final = "costspan.cost.cached_input_usd"
COSTSPAN_COST_CACHE_WRITE: Final = "costspan.cost.cache_write_usd"
COSTSPAN_COST_OUTPUT: Final = "costspan.cost.output_usd"
"""USD for all output tokens, reasoning included."""
COSTSPAN_COST_REASONING: Final = "costspan.cost.reasoning_usd"
"""The part of the output cost spent on reasoning tokens."""
COSTSPAN_PRICE_SOURCE: Final = "costspan.price.source"
"""``genai-prices``, ``override`` or ``provider`` (a cost the response reported itself)."""
COSTSPAN_PRICE_PROVIDER: Final = "costspan.price.provider"
COSTSPAN_PRICE_MODEL: Final = "costspan.price.model"
"""The model the price table matched (e.g. ``gpt-4o-mini`` for ``gpt-4o-mini-2024-07-18``)."""
COSTSPAN_USAGE_ESTIMATED: Final = "costspan.usage.estimated"
"""True when token counts (and so cost) were estimated offline, not reported."""
COSTSPAN_UNPRICED: Final = "costspan.unpriced"
"""True when no price is known for the call's model: its cost is unknown, not zero."""
COSTSPAN_COST_COUNTED_ON: Final = "costspan.cost.counted_on"
"""On a GenAI span that is part of a provider call another span already counts (an SDK's own
span under an instrumentation's, two instrumentations of one client): the span id (16 hex
digits) of the span that carries the call's cost. Such a span carries no cost of its own, so
sums over spans count each call once (docs/instrumentations.md)."""

METRIC_COST: Final = "costspan.cost"
METRIC_TOKENS: Final = "costspan.tokens"
METRIC_UNPRICED_CALLS: Final = "costspan.calls.unpriced"
METRIC_BATCHED: Final = "costspan.metrics.batched"
"""An observable gauge that never reports a value: its callback records costspan's batched
measurements before a reader collects."""
COSTSPAN_TOKEN_TYPE: Final = "costspan.token.type"

# -- budgets ------------------------------------------------------------------------------------
COSTSPAN_BUDGET_DECISION: Final = "costspan.budget.decision"
"""``allow``, ``downgrade``, ``clamp``, ``truncate``, ``warn``, ``callable``, ``refuse``, or
``unchecked`` (budgets could not be checked; the call went on unmetered)."""
COSTSPAN_BUDGET_IDS: Final = "costspan.budget.ids"
"""Names (or scope ids) of every budget the call had to fit."""
COSTSPAN_BUDGET_ID: Final = "costspan.budget.id"
COSTSPAN_BUDGET_REFUSED_BY: Final = "costspan.budget.refused_by"
COSTSPAN_BUDGET_ESTIMATE_USD: Final = "costspan.budget.estimate_usd"
"""The worst-case cost reserved before the call was sent."""
COSTSPAN_BUDGET_OVERRUN_USD: Final = "costspan.budget.overrun_usd"
"""What a call cost beyond the worst case it reserved (a provider billing past costspan's
bound); the ledger records the actual amount."""
COSTSPAN_BUDGET_ESTIMATE_BASIS: Final = "costspan.budget.estimate_basis"
"""On spans of other instrumentations: what the hold reserved at span start was based on, e.g.
``("output:max_tokens", "input:recent")`` (see docs/instrumentations.md)."""
COSTSPAN_BUDGET_REMAINING_USD: Final = "costspan.budget.remaining_usd"
"""After settling: the least USD any of the call's budgets has left."""
COSTSPAN_BUDGET_ORIGINAL_MODEL: Final = "costspan.budget.original_model"
COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS: Final = "costspan.budget.clamped_max_tokens"
"""The output cap a clamp action set: what the budget could still afford."""
COSTSPAN_BUDGET_OUTPUT_CAP_SET: Final = "costspan.budget.output_cap_set"
"""The output cap costspan gave a budgeted request that set none (so that what it reserved
bounds what it can spend); ``COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS``."""
COSTSPAN_BUDGET_DROPPED_MESSAGES: Final = "costspan.budget.dropped_messages"
COSTSPAN_BUDGET_THRESHOLD: Final = "costspan.budget.threshold"
"""On the threshold event and metric: the fraction of the cap that was passed."""
COSTSPAN_BUDGET_SPENT_USD: Final = "costspan.budget.spent_usd"
"""On the threshold event: what the budget had spent when it passed the threshold."""
EVENT_BUDGET_THRESHOLD: Final = "costspan.budget.threshold"
"""The span event of a call that took a budget past one of its soft thresholds (``warn_at``)."""
COSTSPAN_BAGGAGE_REJECT_REASON: Final = "costspan.baggage.reason"
COSTSPAN_LEDGER_FAIL_MODE: Final = "costspan.ledger.fail_mode"
"""Set when the shared ledger was unreachable and the call was decided by the fail mode
(``closed``: refused; ``open``: sent unmetered; ``local``: checked by this process alone)."""

METRIC_BUDGET_DECISIONS: Final = "costspan.budget.decisions"
METRIC_BUDGET_THRESHOLDS: Final = "costspan.budget.thresholds"
METRIC_BUDGET_OVERRUNS: Final = "costspan.budget.overruns"
"""Calls that cost more than they reserved, by provider and model."""
METRIC_BAGGAGE_REJECTED: Final = "costspan.baggage.rejected"
METRIC_LEDGER_UNAVAILABLE: Final = "costspan.ledger.unavailable"
"""Calls decided without the shared ledger, by ``costspan.ledger.fail_mode``."""
