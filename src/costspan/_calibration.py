"""Tokenizer truth: what providers really bill for input, learned from settled calls.

costspan counts input tokens offline with OpenAI's tokenizers; a provider counts with its own
(DeepSeek's, Llama's, Claude's...), and a gateway may add a prompt of its own. Settled calls
that reported their usage teach two things per (provider, model) - every call made under a
budget (admission counted it anyway), and calls outside any budget until 64 have been seen,
then one in 16:

- how the input the provider billed relates to costspan's count of the same request, as
  ``billed = counted x scale + extra``: the **scale** (a high quantile of the recent ratios, at
  most :data:`MAX_SCALE`, from large calls when there are any), so that a provider that bills 36 %
  more than tiktoken is reserved 36 % more; and the **extra** (a high quantile of what calls
  billed past their scaled count), so that a gateway's own prompt is reserved once per call, not
  multiplied into every long prompt;
- the **input sizes** recent calls were billed: for calls whose input costspan cannot see (spans
  of other instrumentations that carry no content), a high quantile of those is the estimate.

Before a (provider, model) has been seen, a documented starting factor applies: 1.0 for OpenAI's
models (costspan ships their tokenizers) and :data:`FOREIGN_FACTOR` for every other model - also
one served through an OpenAI-compatible API on a host costspan does not recognise. Memory is
bounded: :data:`WINDOW` observations per key, :data:`MAX_KEYS` keys.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Final

from costspan._tokens import is_openai_model

WINDOW: Final = 64
"""Observations kept per (provider, model): recent calls weigh, old ones fall out."""
QUANTILE: Final = 0.95
"""The quantile of the recent ratios (and sizes) admission reserves with, not their mean."""
MAX_KEYS: Final = 512
SAMPLE_EVERY: Final = 16
"""Once a window is full, one unbudgeted call in this many is counted to keep it current."""
FOREIGN_FACTOR: Final = 1.5
"""The starting factor for providers whose tokenizer costspan does not ship: Claude's, Llama's,
Gemini's, DeepSeek's... count up to about a third more tokens than o200k for the same text (more
for code and CJK); 1.5 covers that until calls have been seen."""
REFRESH: Final = 16
"""Observations after which a kept factor is worked out again even if none exceeded it (so that
it comes down when a provider's ratios do)."""
MAX_RATIO: Final = 8
MAX_EXTRA: Final = 32_768
"""An observation is believed only if the provider billed at most ``counted x MAX_RATIO +
MAX_EXTRA`` input tokens (room for another tokenizer, and for a gateway's own prompt): more means
the count missed part of the request, or the usage is wrong (a hostile or broken server). One
such answer must not make every later call of the model look hundreds of times larger."""
MAX_SCALE: Final = 2.5
"""The most another tokenizer is believed to count per o200k token (Llama's and others' on CJK
text or code come near 2x). A call billed more than this times costspan's count is read as a
fixed overhead on top (a gateway's own prompt): ``billed = counted x scale + extra``, each
learned on its own, so that short calls through a gateway do not make long ones look hundreds
of times larger."""
LARGE: Final = 1000
"""Calls counted at least this many tokens teach the scale when there are any: on them a fixed
overhead is small next to the count."""
MAX_BILLED: Final = 10_000_000
"""No model's context window is larger: a usage reporting more input is not believed."""
OPENAI_FACTOR: Final = 1.0
"""The starting factor for OpenAI and Azure OpenAI, whose tokenizers costspan ships."""
_OWN_TOKENIZER: Final = frozenset({"openai", "azure.ai.openai"})


_Table = OrderedDict[tuple[str, str], deque[float]]


def plausible(counted: int, billed: int) -> bool:
    """Whether a provider's billed input can be believed against costspan's count of the same
    request (see :data:`MAX_RATIO`)."""
    return counted > 0 and 0 <= billed <= min(counted * MAX_RATIO + MAX_EXTRA, MAX_BILLED)


def _quantile(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(QUANTILE * len(ordered)) - 1)]


def _fit(pairs: deque[tuple[int, int]]) -> tuple[float, int]:
    """(scale, extra) such that ``counted x scale + extra`` covers a high quantile of the calls
    in ``pairs``: the scale from the large calls if there are any (else from all), at most
    :data:`MAX_SCALE` and at least 1; the extra from what each call billed past its scaled
    count."""
    large = [min(b / c, MAX_SCALE) for c, b in pairs if c >= LARGE]
    ratios = large or [min(b / c, MAX_SCALE) for c, b in pairs]
    scale = max(1.0, _quantile(ratios))
    extra = _quantile([max(0.0, b - c * scale) for c, b in pairs])
    return scale, math.ceil(extra)


class Calibration:
    """Per (provider, model): recent billed/counted input ratios and billed input sizes."""

    def __init__(self) -> None:
        # Per (provider, model): the last WINDOW (counted, billed) pairs.
        self._pairs: OrderedDict[tuple[str, str], deque[tuple[int, int]]] = OrderedDict()
        self._sizes: _Table = OrderedDict()
        # The factor of each (provider, model) and how many observations it has outlived: worked
        # out again when a new ratio exceeds it, else every REFRESH observations, instead of
        # sorting the window on every call. A ratio at or below the factor can only lower the
        # quantile, so the kept factor stays an upper bound meanwhile.
        self._factors: dict[tuple[str, str], tuple[float, int, int]] = {}
        # Requested model names with no price of their own (a gateway alias, an Azure
        # deployment) -> the priced model the provider answered with.
        self._aliases: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Per provider: the tier requests that named none were last served at, when not the
        # standard one (an OpenAI project whose default tier is priority).
        self._served: dict[str, str] = {}
        self._answers: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self._seen = 0

    @staticmethod
    def _add(
        table: OrderedDict[tuple[str, str], deque[Any]], key: tuple[str, str], value: Any
    ) -> None:
        window = table.get(key)
        if window is None:
            window = table[key] = deque(maxlen=WINDOW)
            if len(table) > MAX_KEYS:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        window.append(value)

    def observe(self, provider: str, model: str, counted: int, billed: int) -> None:
        """A settled call: costspan counted ``counted`` input tokens, the provider billed
        ``billed``."""
        if not plausible(counted, billed):
            return
        key = (provider, model)
        with self._lock:
            self._add(self._pairs, key, (counted, billed))
            self._add(self._sizes, key, float(billed))
            kept = self._factors.get(key)
            if kept is not None:
                # A call the kept bound covers can only lower it: keep it a while longer.
                if billed > math.ceil(counted * kept[0]) + kept[1] or kept[2] >= REFRESH:
                    del self._factors[key]
                else:
                    self._factors[key] = (kept[0], kept[1], kept[2] + 1)

    def wants(self, provider: str, model: str) -> bool:
        """Whether a call made outside any budget is worth counting to learn from: every call
        until the window is full, then one in :data:`SAMPLE_EVERY` (counting costs time)."""
        window = self._pairs.get((provider, model))
        if window is None or len(window) < WINDOW:
            return True
        self._seen += 1
        return self._seen % SAMPLE_EVERY == 0

    def observe_size(self, provider: str, model: str, billed: int) -> None:
        """A settled call whose request costspan did not count (another instrumentation's)."""
        if not 0 <= billed <= MAX_BILLED:
            return
        with self._lock:
            self._add(self._sizes, (provider, model), float(billed))

    def learn_tier(self, provider: str, served: str) -> None:
        """A request that named no tier (or ``auto``) was served at ``served``. Kept for the
        process (a later answer at the standard tier does not undo it: the bound stays the
        dearer of the two)."""
        if served in ("default", "auto", "flex"):
            return
        if self._served.get(provider) != served and len(self._served) < MAX_KEYS:
            self._served[provider] = served

    def served_tier(self, provider: str) -> str | None:
        """The tier requests naming none are served at by ``provider``, if not the standard."""
        return self._served.get(provider) if self._served else None

    def first_answer(self, provider: str, requested: str, answered: str) -> bool:
        """Whether a request for ``requested`` is seen answered as ``answered`` for the first
        time (then worth comparing their prices). Bounded: forgotten all at once when full."""
        key = (provider, requested, answered)
        answers = self._answers
        if key in answers:
            return False
        if len(answers) >= MAX_KEYS * 4:
            answers.clear()
        answers.add(key)
        return True

    def learn_alias(self, provider: str, requested: str, answered: str) -> None:
        """``requested`` has no price, or less than ``answered``'s, which the provider answered
        it as: the next calls of ``requested`` are reserved at ``answered``'s price."""
        with self._lock:
            self._aliases[(provider, requested)] = answered
            self._aliases.move_to_end((provider, requested))
            if len(self._aliases) > MAX_KEYS:
                self._aliases.popitem(last=False)

    def alias(self, provider: str, model: str) -> str | None:
        """The dearer (or only priced) model ``model`` was last answered as, if any."""
        if not self._aliases:
            return None
        return self._aliases.get((provider, model))

    def factor(self, provider: str, model: str) -> float:
        """What to multiply costspan's input count by: the recent ratios' high quantile (never
        below 1: a provider that bills less is reserved its count), else the starting factor:
        1.0 for OpenAI's models (on OpenAI, Azure OpenAI, or a server that serves them by their
        name), :data:`FOREIGN_FACTOR` for any other model."""
        return self._learned(provider, model)[0]

    def extra(self, provider: str, model: str) -> int:
        """Input tokens billed on top of the scaled count (a gateway's own prompt): the recent
        calls' high quantile, 0 before any."""
        return self._learned(provider, model)[1]

    def _learned(self, provider: str, model: str) -> tuple[float, int]:
        key = (provider, model)
        kept = self._factors.get(key)
        if kept is not None:
            return kept[0], kept[1]
        with self._lock:
            window = self._pairs.get(key)
            if not window:
                own = provider == "azure.ai.openai" or (
                    provider in _OWN_TOKENIZER and is_openai_model(model)
                )
                return (OPENAI_FACTOR if own else FOREIGN_FACTOR), 0
            factor, extra = _fit(window)
            if len(self._factors) >= MAX_KEYS:
                self._factors.clear()
            self._factors[key] = (factor, extra, 0)
            return factor, extra

    def recent_input(self, provider: str, model: str) -> int | None:
        """A high quantile of the input recent calls of this model were billed, if any."""
        window = self._sizes.get((provider, model))
        if not window:
            return None
        with self._lock:
            return math.ceil(_quantile(window))

    def calibrated(self, provider: str, model: str, counted: int) -> int:
        """``counted`` input tokens as this provider is expected to bill them (rounded up): the
        count times the learned scale, plus the learned fixed overhead."""
        factor, extra = self._learned(provider, model)
        return math.ceil(counted * factor) + extra
