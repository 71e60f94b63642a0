"""Framework-free pieces shared by the bert_tiny scripts.

The model configuration and hyper-parameters, the torch -> paddle weight
conversion, data loading in a fixed batch order, the scripts' command line,
and the reprod_client run every acceptance script streams into. Never
imports torch or paddle: a script gets common_torch or common_paddle from
framework(), never both.
"""
import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# The model: a BERT-style sequence classifier, small enough to train on a CPU
# in seconds. Both model files read these values.
CONFIG = dict(
    vocab_size=64,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=256,
    max_position=32,
    type_vocab_size=2,
    num_labels=2,
    layer_norm_eps=1e-12,
    dropout=0.1,
)

# Hyper-parameters shared by both frameworks (the guide's 3.8 step 1: check
# that every one of them is the same on both sides).
SEED = 2024
LR_STEPS = 1000          # lr.py: schedule length
LR_WARMUP = 100          # lr.py: warmup of the linear schedule
LR_BASE = 1e-3           # peak rate of lr.py's schedules and of bp_align.py
POLY_POWER = 2.0
BP_ITERS = 5             # bp_align.py: iterations on one fixed batch
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-6
TRAIN_STEPS = 200        # train_align.py
TRAIN_BATCH = 32
TRAIN_WARMUP = 20
TRAIN_LR = 1e-3

# The gradients bp_align logs, named as the torch reference names them; the
# paddle side finds its parameter through TORCH_TO_PADDLE and transposes
# Linear weights back into torch's [out, in] layout.
BP_GRADS = [
    "bert.embeddings.word_embeddings.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.1.output.LayerNorm.weight",
    "classifier.weight",
]

# HF BERT names -> PaddleNLP-style names, applied in order (the longer
# "attention.output.*" patterns must win over "output.*").
TORCH_TO_PADDLE = [
    ("embeddings.LayerNorm", "embeddings.layer_norm"),
    ("encoder.layer.", "encoder.layers."),
    ("attention.self.query", "self_attn.q_proj"),
    ("attention.self.key", "self_attn.k_proj"),
    ("attention.self.value", "self_attn.v_proj"),
    ("attention.output.dense", "self_attn.out_proj"),
    ("attention.output.LayerNorm", "norm1"),
    ("intermediate.dense", "linear1"),
    ("output.dense", "linear2"),
    ("output.LayerNorm", "norm2"),
]


def paddle_name(torch_name):
    """The paddle model's parameter name for a torch model parameter."""
    for src, dst in TORCH_TO_PADDLE:
        torch_name = torch_name.replace(src, dst)
    return torch_name


def is_linear_weight(torch_name, array):
    """Linear weights are [out, in] in torch and [in, out] in paddle;
    embedding tables and LayerNorm weights keep their layout."""
    return (torch_name.endswith(".weight") and array.ndim == 2
            and ".embeddings." not in torch_name)


def torch_to_paddle_state(state):
    """Converts a torch state dict of numpy arrays to the paddle layout:
    renames every parameter and transposes every Linear weight."""
    out = {}
    for name, value in state.items():
        if is_linear_weight(name, value):
            value = np.ascontiguousarray(value.T)
        out[paddle_name(name)] = value
    return out


def torch_to_paddle_state_broken(state, paddle_shapes):
    """The porting bug behind --break: a converter that only transposes a
    Linear weight when set_state_dict would otherwise refuse it (shapes
    differ). Square weights -- q/k/v/out projections and the pooler, all
    64x64 -- then load silently untransposed."""
    out = {}
    for name, value in state.items():
        pname = paddle_name(name)
        if value.ndim == 2 and tuple(value.shape) != tuple(paddle_shapes[pname]):
            value = np.ascontiguousarray(value.T)
        out[pname] = value
    return out


# --- data ------------------------------------------------------------------

def load_data(workdir):
    """Every array make_data.py wrote, by name."""
    d = Path(workdir) / "data"
    return {p.stem: np.load(p) for p in sorted(d.glob("*.npy"))}


def train_batches(data, steps, batch):
    """The training batches in their fixed order: consecutive slices of the
    training set, wrapping around. Both frameworks consume exactly these
    arrays, so there is no loader randomness to align."""
    n = len(data["train_input_ids"])
    for i in range(steps):
        idx = np.arange(i * batch, (i + 1) * batch) % n
        yield (data["train_input_ids"][idx], data["train_token_type_ids"][idx],
               data["train_attention_mask"][idx], data["train_labels"][idx])


def eval_batches(data, prefix, batch=256):
    """(input_ids, token_type_ids, attention_mask, labels) slices of an eval
    set, in order."""
    n = len(data[f"{prefix}_input_ids"])
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        yield (data[f"{prefix}_input_ids"][sl], data[f"{prefix}_token_type_ids"][sl],
               data[f"{prefix}_attention_mask"][sl], data[f"{prefix}_labels"][sl])


# --- command line and the reprod run ---------------------------------------

def parse_args(doc, argv=None):
    """The acceptance scripts' command line; `doc` is the script's docstring
    (its text up to "Usage:" becomes the --help description)."""
    p = argparse.ArgumentParser(description=doc.split("\nUsage:")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=["torch", "paddle"], required=True)
    p.add_argument("--run", required=True, help="run to log into, NAMESPACE/NAME")
    p.add_argument("--workdir", required=True,
                   help="folder with data/ and weights_*.npz (run_all.py prepares it)")
    p.add_argument("--server", default=os.environ.get("REPROD_SERVER"),
                   help="reprodd address (default $REPROD_SERVER, else 127.0.0.1:50051)")
    p.add_argument("--break", dest="broken", action="store_true",
                   help="paddle only: load the weights with the square-transpose bug")
    args = p.parse_args(argv)
    if args.broken and args.framework != "paddle":
        p.error("--break applies to --framework paddle only")
    return args


def framework(args):
    """The framework side's shared module (common_torch or common_paddle),
    imported only now: one process never imports both frameworks."""
    if args.framework == "torch":
        import common_torch as fw
    else:
        import common_paddle as fw
    fw.setup()
    return fw


def _import_client():
    try:
        import reprod_client
    except ImportError:
        sys.path.insert(0, str(ROOT / "client" / "python"))
        import reprod_client
    return reprod_client


@contextlib.contextmanager
def streaming_run(args, framework_version):
    """Opens (creating when new) the run the script logs into and yields it;
    run.log() returns at once while a background sender streams the tensors.
    On the way out it waits until the server acked every tensor (raising the
    first send failure) and stops the sender. It does not seal: every script
    of a variant logs into the same run, and run_all.py seals the runs once
    all scripts are done."""
    reprod_client = _import_client()
    client = reprod_client.Client(address=args.server)
    labels = {
        "example": "bert_tiny",
        "variant": "broken" if args.broken else "good",
        "framework_version": framework_version,
    }
    run = client.open_run(args.run, framework=args.framework, labels=labels)
    try:
        yield run
        run.flush()
    finally:
        run.close()
