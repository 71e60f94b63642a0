"""Acceptance point 3, loss (guide 3.4): cross entropy of the fixed forward
batch against its labels, eval mode (nn.CrossEntropyLoss on both sides).

Logs checkpoint "loss", key "loss" (float32 scalar).

Usage: loss.py --framework torch|paddle --run NS/NAME --workdir DIR [--server ADDR] [--break]
"""
import common


def main():
    args = common.parse_args(__doc__)
    data = common.load_data(args.workdir)
    keys = ("input_ids", "token_type_ids", "attention_mask", "labels")
    fw = common.framework(args)
    ids, types, mask, labels = fw.tensors(*(data[f"forward_{k}"] for k in keys))
    with common.streaming_run(args, fw.VERSION) as run:
        model = fw.load_model(args.workdir, args.broken)
        criterion = fw.nn.CrossEntropyLoss()
        with fw.no_grad():
            loss = criterion(model(ids, types, mask), labels)
        run.log("loss", {"loss": loss})


if __name__ == "__main__":
    main()
