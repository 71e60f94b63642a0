"""Learning-rate alignment (guide 3.6, the BERT-SST2 Step4 check): three
schedules of 1,000 steps built from each framework's own schedulers --
linear with warmup, cosine annealing, polynomial (power 2) -- peak 1e-3.

Logs checkpoint "lr", keys "linear", "cosine", "polynomial" (float64
[1000] each: the rate in effect at steps 0..999).

Usage: lr.py --framework torch|paddle --run NS/NAME --workdir DIR [--server ADDR] [--break]
"""
import common


def main():
    args = common.parse_args(__doc__)
    fw = common.framework(args)
    with common.streaming_run(args, fw.VERSION) as run:
        for kind in ("linear", "cosine", "polynomial"):
            values = fw.schedule_values(kind, common.LR_BASE, common.LR_STEPS, common.LR_WARMUP)
            run.log("lr", {kind: values})


if __name__ == "__main__":
    main()
