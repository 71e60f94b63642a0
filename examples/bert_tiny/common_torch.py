"""The torch side's shared set-up: model loading, optimizer, schedules."""
from pathlib import Path

import numpy as np
import torch

import common
from model_torch import BertForSequenceClassification

VERSION = torch.__version__
nn = torch.nn
no_grad = torch.no_grad


def setup():
    """Fixed seed, one thread: the scripts share a small CPU, and a single
    thread keeps every reduction in one deterministic order."""
    torch.manual_seed(common.SEED)
    torch.set_num_threads(1)


def load_model(workdir, broken=False):
    """The classifier with weights_torch.npz loaded, in eval mode (dropout
    off). The reference has no broken variant."""
    assert not broken
    model = BertForSequenceClassification(common.CONFIG)
    weights = np.load(Path(workdir) / "weights_torch.npz")
    model.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files})
    model.eval()
    return model


def tensors(*arrays):
    return [torch.from_numpy(a) for a in arrays]


def make_optimizer(model, kind, base_lr, total, warmup=0):
    """AdamW without weight decay on biases and LayerNorm parameters
    (Hugging Face's no_decay convention), driven by the schedule `kind`.
    Returns (optimizer, scheduler)."""
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(s in n for s in no_decay)],
         "weight_decay": common.WEIGHT_DECAY},
        {"params": [p for n, p in model.named_parameters() if any(s in n for s in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=base_lr, eps=common.ADAM_EPS)
    return optimizer, make_scheduler(kind, optimizer, total, warmup)


def step(optimizer, scheduler):
    """Applies the gradients, clears them, advances the schedule."""
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def grad(model, torch_name):
    """The gradient of a parameter, by its torch name."""
    return model.get_parameter(torch_name).grad


def make_scheduler(kind, optimizer, total, warmup=0):
    """torch's schedulers for the three schedules of lr.py:
    linear   warmup from 0 to the peak over `warmup` steps, then linear decay
             to 0 at `total` (transformers' get_linear_schedule_with_warmup);
    cosine   CosineAnnealingLR to 0 over `total`;
    polynomial  PolynomialLR to 0 over `total`, power common.POLY_POWER."""
    sched = torch.optim.lr_scheduler
    if kind == "linear":
        def factor(step):
            if step < warmup:
                return step / warmup
            return max(0.0, (total - step) / (total - warmup))
        return sched.LambdaLR(optimizer, factor)
    if kind == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total)
    if kind == "polynomial":
        return sched.PolynomialLR(optimizer, total_iters=total, power=common.POLY_POWER)
    raise ValueError(kind)


def current_lr(optimizer):
    return optimizer.param_groups[0]["lr"]


def schedule_values(kind, base_lr, total, warmup=0):
    """The learning rate of each of `total` steps (float64 [total]). torch
    schedulers drive an optimizer, so a one-parameter SGD carries it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(kind, optimizer, total, warmup)
    values = []
    for _ in range(total):
        values.append(current_lr(optimizer))
        optimizer.step()
        scheduler.step()
    return np.array(values, dtype=np.float64)


@torch.no_grad()
def accuracy(model, batches):
    """Share of argmax predictions equal to the labels, as float64."""
    correct = total = 0
    for ids, types, mask, labels in batches:
        logits = model(*tensors(ids, types, mask))
        correct += int((logits.argmax(dim=-1) == torch.from_numpy(labels)).sum())
        total += len(labels)
    return np.float64(correct / total)
