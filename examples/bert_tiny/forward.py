"""Acceptance point 1, forward (guide 3.1.3): the logits of the fixed
forward batch, eval mode, from the shared weights.

Logs checkpoint "forward", key "logits" ([4, 2] float32).

Usage: forward.py --framework torch|paddle --run NS/NAME --workdir DIR [--server ADDR] [--break]
"""
import common


def main():
    args = common.parse_args(__doc__)
    data = common.load_data(args.workdir)
    batch = [data[f"forward_{k}"] for k in ("input_ids", "token_type_ids", "attention_mask")]
    fw = common.framework(args)
    with common.streaming_run(args, fw.VERSION) as run:
        model = fw.load_model(args.workdir, args.broken)
        with fw.no_grad():
            logits = model(*fw.tensors(*batch))
        run.log("forward", {"logits": logits})


if __name__ == "__main__":
    main()
