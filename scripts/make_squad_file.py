"""Write a SQuAD v1.1 file with exactly N features, by repeating the articles of another.

The full dev set gives 10,833 features; a valid MLPerf run on the demo model
needs a data set of that size to behave like the real one (the accuracy run
covers it all, the performance run's QSL is that size). This repeats the
articles of a SQuAD file (e.g. ``../shared/data/squad-v1.1-dev-part.json``)
with new question ids until the feature count reaches N, then drops trailing
questions of the last copy so the count is exactly N.

    python scripts/make_squad_file.py ../shared/data/squad-v1.1-dev-part.json --features 10833 --out /tmp/squad-10833.json

The output is written outside the repository (no SQuAD text in it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path


def features_per_question(source: Path) -> list[int]:
    """Features of each question of ``source``, in file order (orch's feature builder, cached)."""
    from collections import Counter

    from orchestrator.models.demo import demo_vocab_path
    from orchestrator.squad.library import load_features

    features = load_features(source, demo_vocab_path())
    counts = Counter(info.example_index for info in features.infos)
    return [counts[i] for i in range(len(features.examples))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--features", type=int, default=10833)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    source = json.loads(args.source.read_text())
    flat = features_per_question(args.source)
    per_article, at = [], 0
    for article in source["data"]:
        n = sum(len(p["qas"]) for p in article["paragraphs"])
        per_article.append(flat[at:at + n])
        at += n
    out, total, copy_no = [], 0, 0
    while total < args.features:
        copy_no += 1
        for article, counts in zip(source["data"], per_article):
            if total >= args.features:
                break
            article = copy.deepcopy(article)
            article["title"] = f"{article['title']} (copy {copy_no})"
            kept_paragraphs, qa_index = [], 0
            for paragraph in article["paragraphs"]:
                kept = []
                for qa in paragraph["qas"]:
                    n = counts[qa_index]
                    qa_index += 1
                    if total + n > args.features:
                        continue  # a smaller question later may still fit exactly
                    total += n
                    kept.append({**qa, "id": f"{qa['id']}-c{copy_no}"})
                if kept:
                    kept_paragraphs.append({**paragraph, "qas": kept})
            if kept_paragraphs:
                article["paragraphs"] = kept_paragraphs
                out.append(article)
    if total != args.features:
        print(f"could only reach {total} features", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps({"version": "1.1", "data": out}))
    questions = sum(len(p["qas"]) for a in out for p in a["paragraphs"])
    print(f"{args.out}: {len(out)} articles, {questions} questions, {total} features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
