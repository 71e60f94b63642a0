"""Writes the deterministic fake data every script reads (numpy only).

WORKDIR/data/*.npy, int64:
  forward_{input_ids,token_type_ids,attention_mask,labels}   one batch of 4
      (forward.py, loss.py, bp_align.py), with padding in two rows;
  metric_*   512 examples of the task below (metric.py, untrained model);
  train_*    4,800 examples of the task (train_align.py trains on them in
      order);
  eval_*     2,000 further examples (train_align.py's accuracy).

The task: a sentence pair "[CLS] a [SEP] b [SEP]" of random tokens in which
the marker tokens A and B each occur once, anywhere; the label is 1 when A
comes before B. The model has to use positions and attention, not just token
presence, and still learns it in ~150 AdamW steps.

Usage: make_data.py --workdir DIR
"""
import argparse
from pathlib import Path

import numpy as np

from common import CONFIG, SEED

PAD, CLS, SEP, A, B = 0, 1, 2, 3, 4
FIRST_WORD = 5
SEQ_LEN = 16


def task_examples(rng, n):
    """n examples of the A-before-B task, padded to SEQ_LEN."""
    vocab = CONFIG["vocab_size"]
    ids = np.full((n, SEQ_LEN), PAD, dtype=np.int64)
    types = np.zeros((n, SEQ_LEN), dtype=np.int64)
    mask = np.zeros((n, SEQ_LEN), dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        length = rng.integers(3, SEQ_LEN - 3 + 1)       # content tokens
        words = rng.integers(FIRST_WORD, vocab, size=length)
        pa, pb = rng.choice(length, size=2, replace=False)
        words[pa], words[pb] = A, B
        labels[i] = int(pa < pb)
        split = rng.integers(1, length)                   # len(a) in [1, length-1]
        seq = [CLS, *words[:split], SEP, *words[split:], SEP]
        ids[i, :len(seq)] = seq
        types[i, split + 2:len(seq)] = 1
        mask[i, :len(seq)] = 1
    return ids, types, mask, labels


def make(workdir):
    out = Path(workdir) / "data"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    arrays = {}

    ids = rng.integers(FIRST_WORD, CONFIG["vocab_size"], size=(4, SEQ_LEN), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 12:] = 0
    mask[3, 7:] = 0
    ids[mask == 0] = PAD
    ids[:, 0] = CLS
    types = np.zeros_like(ids)
    types[:, SEQ_LEN // 2:] = 1
    types[mask == 0] = 0
    arrays.update(forward_input_ids=ids, forward_token_type_ids=types,
                  forward_attention_mask=mask,
                  forward_labels=np.array([0, 1, 1, 0], dtype=np.int64))

    for prefix, n in (("metric", 512), ("train", 4800), ("eval", 2000)):
        ids, types, mask, labels = task_examples(rng, n)
        arrays.update({f"{prefix}_input_ids": ids, f"{prefix}_token_type_ids": types,
                       f"{prefix}_attention_mask": mask, f"{prefix}_labels": labels})

    for name, a in arrays.items():
        np.save(out / f"{name}.npy", a)
    return arrays


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    arrays = make(args.workdir)
    print(f"make_data: {len(arrays)} arrays in {Path(args.workdir) / 'data'}")


if __name__ == "__main__":
    main()
