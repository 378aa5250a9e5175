"""Our remote classifiers against real vLLM pooling servers (a machine with vLLM and a GPU).

Not part of the CPU suite (pytest does not collect this file). It builds two tiny BERT models with
transformers (random weights, a tiny vocabulary: nothing is downloaded), serves them with
`vllm serve --runner pooling` (an embedding model with sentence-transformers mean pooling, and a
sequence classifier with `id2label`), then checks that

- `OpenAIEmbeddingsEncoder` (POST /v1/embeddings) returns the vectors transformers computes locally
  (mean pooling, L2-normalised), and
- `VllmClassifyModel` behind `DomainClassifier` (POST /classify) returns the local softmax and
  vLLM's `label`, with labels from the response alone,

and prints one JSON line per check. Usage: python tests/device/vllm_pooling_check.py WORKDIR
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz",
         "code", "law", "pain", "the", "is"]
LABELS = {0: "technical", 1: "medical", 2: "legal"}
TEXTS = ["code is the law", "pain", "the law is the law is the law", "a b c code pain"]


def build_models(root: Path) -> tuple[Path, Path]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    embed_dir, classify_dir = root / "tiny-embed", root / "tiny-classify"
    for out in (embed_dir, classify_dir):
        out.mkdir(parents=True, exist_ok=True)
        (out / "vocab.txt").write_text("\n".join(VOCAB))
        BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    common = {"vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64}
    BertModel(BertConfig(**common)).save_pretrained(embed_dir)
    # sentence-transformers layout, so vLLM pools by the mean and normalises, as all-MiniLM-L6-v2 does
    (embed_dir / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (embed_dir / "1_Pooling").mkdir(exist_ok=True)
    (embed_dir / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False}))
    (embed_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    config = BertConfig(**common, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    BertForSequenceClassification(config).save_pretrained(classify_dir)
    return embed_dir, classify_dir


def local_outputs(embed_dir: Path, classify_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(embed_dir))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = BertModel.from_pretrained(str(embed_dir)).eval()(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        vectors = (states * mask).sum(1) / mask.sum(1)
        vectors = torch.nn.functional.normalize(vectors, dim=-1).numpy()
        logits = BertForSequenceClassification.from_pretrained(str(classify_dir)).eval()(**batch).logits
    return vectors, torch.softmax(logits, -1).numpy()


def serve(model: Path, name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = ["vllm", "serve", str(model), "--served-model-name", name, "--runner", "pooling", "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.2", "--max-model-len", "64"]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm on {port} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"vllm on {port} not healthy:\n{log.read_text()[-3000:]}")


async def check_clients(embed_port: int, classify_port: int, vectors: np.ndarray, probs: np.ndarray) -> None:
    from litellm_lora_router.classifiers.domain import DomainClassifier
    from litellm_lora_router.classifiers.remote import OpenAIEmbeddingsEncoder, VllmClassifyModel
    from litellm_lora_router.config import CategoryModelConfig, EncoderConfig

    encoder_config = EncoderConfig(backend="openai", remote={"base_url": f"http://127.0.0.1:{embed_port}/v1"})
    encoder = OpenAIEmbeddingsEncoder(encoder_config, "tiny-embed")
    remote_vectors = np.stack([v for v, _ in encoder.encode(TEXTS)])
    cosines = (remote_vectors * vectors).sum(-1)
    print(json.dumps({"check": "embeddings", "dim": encoder.dim, "min_cosine_vs_local": float(cosines.min())}))
    assert cosines.min() > 0.999, cosines

    model_config = CategoryModelConfig(model_id="tiny-classify", backend="vllm", threshold=0.0,
                                       remote={"base_url": f"http://127.0.0.1:{classify_port}/v1"})
    model = VllmClassifyModel(model_config, EncoderConfig())
    classifier = DomainClassifier(model, [], 0.0, lambda label: label)  # labels from vLLM's answers alone
    results = await classifier.classify(TEXTS)
    expected = [LABELS[int(p.argmax())] for p in probs]
    confidences = [r.confidence for r in results]
    print(json.dumps({"check": "classify", "categories": [r.category for r in results], "expected": expected,
                      "max_prob_error": float(np.abs(np.array(confidences) - probs.max(-1)).max()),
                      "reported_labels": model.reported_labels}))
    assert [r.category for r in results] == expected
    assert np.allclose(confidences, probs.max(-1), atol=1e-3)
    body = {"model": "tiny-classify", "input": TEXTS[:1]}
    raw = httpx.post(f"http://127.0.0.1:{classify_port}/classify", json=body).json()
    print(json.dumps({"check": "classify-response", "keys": sorted(raw), "row_keys": sorted(raw["data"][0])}))
    await classifier.aclose()


def main() -> None:
    root = Path(sys.argv[1])
    embed_dir, classify_dir = build_models(root)
    vectors, probs = local_outputs(embed_dir, classify_dir)
    embed = serve(embed_dir, "tiny-embed", 8101, root / "embed.log")
    classify = serve(classify_dir, "tiny-classify", 8102, root / "classify.log")
    try:
        wait_healthy(8101, embed, root / "embed.log")
        wait_healthy(8102, classify, root / "classify.log")
        asyncio.run(check_clients(8101, 8102, vectors, probs))
        version = subprocess.run(["vllm", "--version"], capture_output=True, text=True).stdout.strip()
        print(json.dumps({"check": "done", "vllm": version}))
    finally:
        for process in (embed, classify):
            process.terminate()
        for process in (embed, classify):
            process.wait(30)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
