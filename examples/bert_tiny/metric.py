"""Acceptance point 2, metric (guide 3.3): accuracy of the (untrained)
model on the fixed metric eval set, with each framework's own way of
computing it (torch: argmax == label; paddle: paddle.metric.Accuracy).

Logs checkpoint "metric", key "acc" (float64 scalar).

Usage: metric.py --framework torch|paddle --run NS/NAME --workdir DIR [--server ADDR] [--break]
"""
import common


def main():
    args = common.parse_args(__doc__)
    data = common.load_data(args.workdir)
    fw = common.framework(args)
    with common.streaming_run(args, fw.VERSION) as run:
        model = fw.load_model(args.workdir, args.broken)
        acc = fw.accuracy(model, common.eval_batches(data, "metric"))
        run.log("metric", {"acc": acc})


if __name__ == "__main__":
    main()
