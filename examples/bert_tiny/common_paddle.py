"""The paddle side's shared set-up: model loading (and the --break bug),
optimizer, schedules."""
import os
import warnings
from pathlib import Path

# One math-library thread, as on the torch side; must be set before paddle
# loads MKL.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message="No ccache found")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import common  # noqa: E402
from model_paddle import BertForSequenceClassification  # noqa: E402

VERSION = paddle.__version__
nn = paddle.nn
no_grad = paddle.no_grad


def setup():
    paddle.set_device("cpu")
    paddle.seed(common.SEED)


def load_model(workdir, broken=False, bug=None):
    """The classifier with weights_paddle.npz loaded (set_state_dict), in
    eval mode. With broken=True the weights come from weights_torch.npz
    through common.torch_to_paddle_state_broken instead: the square Linear
    weights stay in torch's [out, in] layout. bug: localize.py's planted
    bug in encoder layer 1 ("forward", "backward"; None = none)."""
    model = BertForSequenceClassification(common.CONFIG, bug=bug)
    if broken:
        torch_weights = np.load(Path(workdir) / "weights_torch.npz")
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        state = common.torch_to_paddle_state_broken(
            {k: torch_weights[k] for k in torch_weights.files}, shapes)
    else:
        weights = np.load(Path(workdir) / "weights_paddle.npz")
        state = {k: weights[k] for k in weights.files}
    missing, unexpected = model.set_state_dict(state)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit the model: missing {missing}, "
                           f"unexpected {unexpected}")
    model.eval()
    return model


def tensors(*arrays):
    return [paddle.to_tensor(a) for a in arrays]


def make_optimizer(model, kind, base_lr, total, warmup=0):
    """AdamW without weight decay on biases and norm parameters: paddle
    decides per parameter through apply_decay_param_fun, which receives the
    parameter's internal name (linear_3.w_0), so the structured names are
    mapped to those first. Returns (optimizer, scheduler)."""
    scheduler = make_scheduler(kind, base_lr, total, warmup)
    decay = {p.name for n, p in model.named_parameters()
             if not any(s in n for s in ("bias", "norm"))}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=scheduler, parameters=model.parameters(),
        weight_decay=common.WEIGHT_DECAY, epsilon=common.ADAM_EPS,
        apply_decay_param_fun=lambda name: name in decay)
    return optimizer, scheduler


def step(optimizer, scheduler):
    """Applies the gradients, clears them, advances the schedule."""
    optimizer.step()
    optimizer.clear_grad()
    scheduler.step()


def current_lr(optimizer):
    return optimizer.get_lr()


def grad(model, torch_name):
    """The gradient of the parameter the torch model calls `torch_name`, in
    torch's layout (Linear weights transposed back to [out, in])."""
    p = dict(model.named_parameters())[common.paddle_name(torch_name)]
    return p.grad.T if common.is_linear_weight(torch_name, p) else p.grad


def make_scheduler(kind, base_lr, total, warmup=0):
    """paddle.optimizer.lr's schedulers for the three schedules of lr.py (see
    common_torch.make_scheduler for their definitions)."""
    lr = paddle.optimizer.lr
    if kind == "linear":
        decay = lr.PolynomialDecay(base_lr, decay_steps=total - warmup, end_lr=0.0, power=1.0)
        return lr.LinearWarmup(decay, warmup_steps=warmup, start_lr=0.0, end_lr=base_lr)
    if kind == "cosine":
        return lr.CosineAnnealingDecay(base_lr, T_max=total)
    if kind == "polynomial":
        return lr.PolynomialDecay(base_lr, decay_steps=total, end_lr=0.0,
                                  power=common.POLY_POWER)
    raise ValueError(kind)


def schedule_values(kind, base_lr, total, warmup=0):
    """The learning rate of each of `total` steps (float64 [total])."""
    scheduler = make_scheduler(kind, base_lr, total, warmup)
    values = []
    for _ in range(total):
        values.append(scheduler())
        scheduler.step()
    return np.array(values, dtype=np.float64)


@paddle.no_grad()
def accuracy(model, batches):
    """paddle.metric.Accuracy over the batches, as float64."""
    metric = paddle.metric.Accuracy()
    for ids, types, mask, labels in batches:
        logits = model(*tensors(ids, types, mask))
        metric.update(metric.compute(logits, paddle.to_tensor(labels[:, None])))
    return np.float64(metric.accumulate())
