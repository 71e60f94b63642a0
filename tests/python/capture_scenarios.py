"""Runs reprod_client.capture on a small model under ONE framework and writes
what the test needs to check it (used by test_capture.py, one subprocess per
framework: torch and paddle are never imported into one process).

    python capture_scenarios.py torch|paddle ADDRESS RUN SCENARIO OUT_DIR

Writes OUT_DIR/expected.npz ("<step>|<key>" -> the value computed without
any hook: the module's output by calling the submodules directly, the
gradient of that output by the framework's autograd.grad on a separate
forward pass) and OUT_DIR/meta.json (hook counts after exit, whether the
model's loss and parameter gradients are identical with and without the
capture, error messages).
"""
import json
import sys
from pathlib import Path

import numpy as np

FRAMEWORK, ADDRESS, RUN, SCENARIO, OUT = sys.argv[1:6]

if FRAMEWORK == "torch":
    import torch as fw
    nn = fw.nn
    Module = nn.Module
    fw.manual_seed(0)

    def to_tensor(a):
        return fw.from_numpy(a)

    def to_numpy(t):
        return t.detach().numpy()

    def grads_of(loss, tensors):
        return fw.autograd.grad(loss, tensors)

    def param_grads(model):
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}

    def clear_grads(model):
        model.zero_grad(set_to_none=True)

    def forward_hook_count(model):
        return sum(len(m._forward_hooks) for m in model.modules())

    def tensor_hook_count(t):
        return len(t._backward_hooks or {})
else:
    import paddle as fw
    nn = fw.nn
    Module = nn.Layer
    fw.seed(0)
    fw.set_device("cpu")

    def to_tensor(a):
        return fw.to_tensor(a)

    def to_numpy(t):
        return t.numpy()

    def grads_of(loss, tensors):
        return fw.grad(outputs=[loss], inputs=list(tensors), retain_graph=True)

    def param_grads(model):
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}

    def clear_grads(model):
        model.clear_gradients()

    def forward_hook_count(model):
        return sum(len(m._forward_post_hooks) for m in model.sublayers(include_self=True))

    def tensor_hook_count(t):
        return None  # paddle keeps tensor hooks in C++; not observable

import reprod_client  # noqa: E402


class Block(Module):
    """Called twice per forward: block, block[1] (and its children)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(self.lin(x))


class Pair(Module):
    """Nested tuple output: (a, (b, s)) with a non-tensor-free nesting."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.a(x), (self.b(x), x.sum())


class Net(Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.pair = Pair()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = self.block(self.block(x))
        a, (b, s) = self.pair(h)
        return {"logits": self.head(a), "aux": b, "sum": s, "note": "not a tensor"}


class BadKey(Module):
    def forward(self, x):
        return {"bad key": x * 2}


def loss_of(out):
    return (out["logits"] * out["logits"]).sum() + (out["aux"] * out["aux"]).mean() \
        + out["sum"] * 0.5


X = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)


def oracle(model, x):
    """Every module output by calling the submodules directly (no hook is
    involved), and the gradient of the loss with respect to each, from
    autograd.grad. Returns {key: (output, grad or None)}."""
    b = model.block
    h1 = b.lin(x)
    n1 = b.norm(h1)
    h2 = b.lin(n1)
    n2 = b.norm(h2)
    a = model.pair.a(n2)
    bb = model.pair.b(n2)
    s = n2.sum()
    logits = model.head(a)
    out = {"logits": logits, "aux": bb, "sum": s}
    loss = loss_of(out)
    named = {
        "block.lin": [h1], "block.norm": [n1], "block": [n1],
        "block.lin[1]": [h2], "block.norm[1]": [n2], "block[1]": [n2],
        "pair.a": [a], "pair.b": [bb], "head": [logits],
    }
    tensors = [h1, n1, h2, n2, a, bb, s, logits]
    grads = dict(zip(map(id, tensors), grads_of(loss, tensors)))
    result = {}
    for mod, outs in named.items():
        for i, t in enumerate(outs):
            result[f"{mod}/forward/output/{i}"] = to_numpy(t)
            result[f"{mod}/backward/grad_output/{i}"] = to_numpy(grads[id(t)])
    for path, t in (("0", a), ("1/0", bb), ("1/1", s)):
        result[f"pair/forward/output/{path}"] = to_numpy(t)
        result[f"pair/backward/grad_output/{path}"] = to_numpy(grads[id(t)])
    for name, t in (("logits", logits), ("aux", bb), ("sum", s)):
        result[f"[root]/forward/output/{name}"] = to_numpy(t)
        result[f"[root]/backward/grad_output/{name}"] = to_numpy(grads[id(t)])
    # inputs=True: each module's positional input.
    for mod, t in (("block.lin", x), ("block.norm", h1), ("block", x), ("block.lin[1]", n1),
                   ("block.norm[1]", h2), ("block[1]", n1), ("pair.a", n2), ("pair.b", n2),
                   ("pair", n2), ("head", a), ("[root]", x)):
        result[f"{mod}/forward/input/0"] = to_numpy(t)
    return result


def train_step(model, x):
    clear_grads(model)
    loss = loss_of(model(x))
    loss.backward()
    return to_numpy(loss).copy(), param_grads(model)


def main():
    out_dir = Path(OUT)
    client = reprod_client.Client(ADDRESS)
    model = Net()
    model.eval()
    x = to_tensor(X)
    expected, meta = {}, {"scenario": SCENARIO}
    ref = oracle(model, x)
    plain_loss, plain_grads = train_step(model, x)

    with client.open_run(RUN, framework=FRAMEWORK) as run:
        if SCENARIO == "full":
            with reprod_client.capture(model, run, inputs=True) as cap:
                meta["modules"] = cap.modules
                losses, grads = [], []
                for step in (0, 1):
                    loss, g = train_step(model, x)
                    losses.append(loss)
                    grads.append(g)
                    assert cap.next_step() == step + 1
                    for k, v in ref.items():
                        expected[f"{step}|{k}"] = v
                # Step 2: forward only; its gradient hooks are registered
                # but have not fired when the block ends.
                pending = model(x)
                meta["hooks_inside"] = forward_hook_count(model)
            meta["hooks_after_exit"] = forward_hook_count(model)
            meta["tensor_hooks_after_exit"] = tensor_hook_count(pending["logits"])
            loss_of(pending).backward()          # must log nothing
            train_step(model, x)                  # must log nothing
            for k, v in ref.items():
                if "/forward/output/" in k or "/forward/input/" in k:
                    expected[f"2|{k}"] = v
            meta["loss_unchanged"] = all(np.array_equal(loss, plain_loss) for loss in losses)
            meta["grads_unchanged"] = all(
                g.keys() == plain_grads.keys()
                and all(np.array_equal(g[n], plain_grads[n]) for n in g) for g in grads)
        elif SCENARIO == "select":
            with reprod_client.capture(model, run, what=("forward",), include=["block*"],
                                       exclude=["*.norm"], every_n_steps=2, step=5) as cap:
                meta["modules"] = cap.modules
                for step in (5, 6, 7):
                    train_step(model, x)
                    cap.next_step()
            for step in (5, 7):
                for mod in ("block", "block.lin", "block[1]", "block.lin[1]"):
                    k = f"{mod}/forward/output/0"
                    expected[f"{step}|{k}"] = ref[k]
        elif SCENARIO == "late_backward":
            # A backward after next_step() still logs at its forward's step;
            # hooks still unfired two next_step() calls later are removed.
            with reprod_client.capture(model, run) as cap:
                out0 = model(x)
                cap.next_step()
                out1 = model(x)
                loss_of(out0).backward()      # step 0's gradients
                cap.next_step()
                meta["kept_tensor_hooks"] = tensor_hook_count(out1["logits"])
                cap.next_step()
                meta["stale_tensor_hooks"] = tensor_hook_count(out1["logits"])
                loss_of(out1).backward()      # step 1's hooks are gone: nothing
            for k, v in ref.items():
                if "/forward/input/" not in k:
                    expected[f"0|{k}"] = v
                if "/forward/output/" in k:
                    expected[f"1|{k}"] = v
        elif SCENARIO == "stats":
            # Statistics in place of tensors: the oracle's values reduced
            # in numpy (float64), here compared by the test.
            with reprod_client.capture(model, run, inputs=True, stats=True) as cap:
                meta["stats"] = cap.stats
                train_step(model, x)
            for k, v in ref.items():
                a = v.astype(np.float64)
                expected[f"0|{k}"] = np.array([a.mean(), np.abs(a).mean(),
                                               np.sqrt((a * a).mean()), np.abs(a).max()])
        elif SCENARIO == "params":
            # Parameter gradients of each module's own parameters, from a
            # backward through a module called twice (block.lin): one
            # gradient, the sum over both calls, equal to a plain step's.
            with reprod_client.capture(model, run, params=True, every_n_steps=2) as cap:
                for step in (0, 1, 2):
                    train_step(model, x)
                    cap.next_step()
            for step in (0, 2):
                for k, v in ref.items():
                    if "/forward/input/" not in k:
                        expected[f"{step}|{k}"] = v
                for name, g in plain_grads.items():
                    module, pname = name.rsplit(".", 1)
                    expected[f"{step}|{module}/backward/param_grad/{pname}"] = g
        elif SCENARIO == "backward_only":
            with reprod_client.capture(model, run, what="backward", checkpoint="grads") as cap:
                train_step(model, x)
            for k, v in ref.items():
                if "/backward/" in k:
                    expected[f"0|{k}"] = v
        elif SCENARIO == "errors":
            errors = {}
            try:
                reprod_client.capture(object(), run)
            except TypeError as e:
                errors["not_a_model"] = str(e)
            try:
                reprod_client.capture(model, run, include=["nothing.*"])
            except ValueError as e:
                errors["selects_nothing"] = str(e)
            bad = BadKey()
            with reprod_client.capture(bad, run):
                try:
                    bad(x)
                except ValueError as e:
                    errors["bad_key"] = str(e)
            meta["errors"] = errors
        run.flush()
    np.savez(out_dir / "expected.npz", **expected)
    (out_dir / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
