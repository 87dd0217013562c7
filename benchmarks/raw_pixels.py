"""kNN and linear top-1 of raw pixels: the floor a learned encoder has to clear.

The images go through the evaluations' own transform (resize, centre crop to INPUT.SIZE,
normalize), are flattened and L2-normalized; kNN is the weighted kNN of ``unimoco knn`` at each
k, the linear classifier scikit-learn's multinomial logistic regression (a convex problem: no
schedule to tune). Usage: python benchmarks/raw_pixels.py OUT_JSON --config-file F [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.eval.data import build_eval_splits
from unimoco.pretrain.eval.features import compute_outputs
from unimoco.pretrain.eval.knn import knn_scores
from unimoco.pretrain.eval.metrics import topk_accuracy

KNN_KS = (20, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON file to write")
    parser.add_argument(
        "--config-file", required=True, help="a YAML file or a built-in config's name"
    )
    args, overrides = parser.parse_known_args()  # the rest: KEY VALUE pairs
    cfg = load_cfg(args.config_file, overrides)
    train, val, num_classes = build_eval_splits(cfg)
    dim = 3 * cfg.INPUT.SIZE**2
    cpu = torch.device("cpu")

    def pixels(images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.flatten(1), dim=1)

    bank, bank_labels = compute_outputs(pixels, dim, train, cfg, cpu)
    queries, labels = compute_outputs(pixels, dim, val, cfg, cpu)
    result: dict[str, float] = {"num_train": len(bank), "num_val": len(queries)}
    for k in KNN_KS:
        scores = knn_scores(queries, bank, bank_labels, num_classes, k, cfg.EVAL.KNN_T)
        result[f"knn{k}_top1"] = topk_accuracy(scores, labels)["top1"]
    linear = LogisticRegression(max_iter=2000).fit(bank.numpy(), bank_labels.numpy())
    result["linear_top1"] = 100.0 * linear.score(queries.numpy(), labels.numpy())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
