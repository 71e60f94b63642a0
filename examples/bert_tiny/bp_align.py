"""Acceptance point 4, backward (guide 3.8): five AdamW iterations on the
fixed forward batch, eval mode (no dropout), the shared weights; weight decay
0.01 except on biases and LayerNorm parameters; a cosine schedule so the
rate changes between iterations.

Logs checkpoint "bp_align" at step=i for each iteration i: "loss" (before
the update), "lr" (the rate the update uses) and "grad/<torch name>" for the
parameters in common.BP_GRADS (torch layout on both sides).

Usage: bp_align.py --framework torch|paddle --run NS/NAME --workdir DIR [--server ADDR] [--break]
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
        optimizer, scheduler = fw.make_optimizer(
            model, "cosine", common.LR_BASE, total=2 * common.BP_ITERS)
        for i in range(common.BP_ITERS):
            lr = fw.current_lr(optimizer)
            loss = criterion(model(ids, types, mask), labels)
            loss.backward()
            grads = {name: fw.grad(model, name) for name in common.BP_GRADS}
            run.log("bp_align", {"loss": loss, "lr": lr, "grad": grads}, step=i)
            fw.step(optimizer, scheduler)


if __name__ == "__main__":
    main()
