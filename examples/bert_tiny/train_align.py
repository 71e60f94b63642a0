"""Acceptance point 5, training (guide 3.11): a short training on the
synthetic A-before-B task from the shared weights, then the accuracy on its
eval set. Everything that could differ between frameworks by chance is
fixed: the same batches in the same order (common.train_batches, no
shuffling), dropout off (eval mode, as in bp_align), AdamW with the linear
warmup schedule.

Logs checkpoint "train_align": key "loss" every 20 steps (step=i, the
training loss of that batch, live while training) and, at the end, key "acc"
(float64 scalar; the guide's SST-2 threshold is 0.15%).

Usage: train_align.py --framework torch|paddle --run NS/NAME --workdir DIR [--server ADDR] [--break]
"""
import sys
import time

import common


def main():
    args = common.parse_args(__doc__)
    data = common.load_data(args.workdir)
    fw = common.framework(args)
    with common.streaming_run(args, fw.VERSION) as run:
        model = fw.load_model(args.workdir, args.broken)
        criterion = fw.nn.CrossEntropyLoss()
        optimizer, scheduler = fw.make_optimizer(
            model, "linear", common.TRAIN_LR, common.TRAIN_STEPS, common.TRAIN_WARMUP)
        start = time.time()
        batches = common.train_batches(data, common.TRAIN_STEPS, common.TRAIN_BATCH)
        for i, batch in enumerate(batches):
            ids, types, mask, labels = fw.tensors(*batch)
            loss = criterion(model(ids, types, mask), labels)
            loss.backward()
            if i % 20 == 0 or i == common.TRAIN_STEPS - 1:
                run.log("train_align", {"loss": loss}, step=i)
            fw.step(optimizer, scheduler)
        acc = fw.accuracy(model, common.eval_batches(data, "eval"))
        run.log("train_align", {"acc": acc})
        print(f"train_align[{args.framework}]: {common.TRAIN_STEPS} steps in "
              f"{time.time() - start:.1f}s, eval accuracy {acc:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
