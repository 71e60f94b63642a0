#!/usr/bin/env python3
"""Writes a small sample reproduction submission, as reprod_log would.

Layout (the reproduction guide's log_reprod/ folder, §2.2.3; see
docs/design.md §The reproduction workflow):
    forward_{torch,paddle}.npy      logits of a tiny model          -> pass
    metric_{torch,paddle}.npy       accuracy                         -> pass
    loss_{torch,paddle}.npy         cross entropy; the paddle side
                                    deliberately uses a wrong eps    -> FAIL
    bp_align_{torch,paddle}.npy     loss_0 .. loss_4 over 5 steps    -> pass
    train_align_{benchmark,paddle}.npy  final accuracy within 0.15% -> pass

Each file is `np.save(path, dict)`: a 0-d object array holding a pickled dict,
exactly what reprod_log.ReprodLogger.save writes. Deterministic (seed 0).
"""
import os
import sys

import numpy as np


def save(path, data):
    # Same call as reprod_log.ReprodLogger.save.
    np.save(path, data)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)

    logits = rng.standard_normal((4, 2)).astype(np.float32)
    # A faithful port: identical up to float32 rounding of a reordered sum.
    logits_pd = (logits + np.float32(1e-8) * rng.standard_normal(logits.shape)).astype(np.float32)
    save(os.path.join(out_dir, "forward_torch.npy"), {"logits": logits})
    save(os.path.join(out_dir, "forward_paddle.npy"), {"logits": logits_pd})

    save(os.path.join(out_dir, "metric_torch.npy"), {"acc": np.array(0.8125)})
    save(os.path.join(out_dir, "metric_paddle.npy"), {"acc": np.array(0.8125)})

    # The broken pair: LayerNorm eps 1e-5 vs 1e-12 shifts the loss by ~1e-4.
    save(os.path.join(out_dir, "loss_torch.npy"), {"loss": np.array(0.69314718, dtype=np.float32)})
    save(os.path.join(out_dir, "loss_paddle.npy"), {"loss": np.array(0.69326496, dtype=np.float32)})

    losses = np.linspace(0.7, 0.5, 5).astype(np.float32)
    save(os.path.join(out_dir, "bp_align_torch.npy"), {f"loss_{i}": np.array(v) for i, v in enumerate(losses)})
    save(os.path.join(out_dir, "bp_align_paddle.npy"), {f"loss_{i}": np.array(v) for i, v in enumerate(losses)})

    save(os.path.join(out_dir, "train_align_benchmark.npy"), {"acc": np.array(0.9232)})
    save(os.path.join(out_dir, "train_align_paddle.npy"), {"acc": np.array(0.9220)})
    print(out_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/sample_submission")
