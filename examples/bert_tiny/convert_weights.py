"""Creates the shared random weights and converts them to paddle's layout.

Runs under torch only (the guide's 3.1.2: when the reference publishes no
weights, initialise the torch model with a fixed seed and convert that):

  WORKDIR/weights_torch.npz    torch state dict, numpy float32, HF names
  WORKDIR/weights_paddle.npz   the same values renamed to the paddle model's
                               names (common.TORCH_TO_PADDLE), Linear weights
                               transposed to [in, out]

The conversion itself is pure numpy (common.torch_to_paddle_state); the
paddle scripts load the result with set_state_dict.

Usage: convert_weights.py --workdir DIR
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from common import CONFIG, SEED, is_linear_weight, torch_to_paddle_state
from model_torch import BertForSequenceClassification


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(SEED)
    model = BertForSequenceClassification(CONFIG)
    for m in model.modules():  # BERT's initialisation: N(0, 0.02), zero biases
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.bias)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    np.savez(workdir / "weights_torch.npz", **state)
    paddle_state = torch_to_paddle_state(state)
    np.savez(workdir / "weights_paddle.npz", **paddle_state)
    transposed = sum(is_linear_weight(n, a) for n, a in state.items())
    print(f"convert_weights: {len(state)} tensors ({transposed} Linear weights transposed)"
          f" -> {workdir}/weights_{{torch,paddle}}.npz")


if __name__ == "__main__":
    main()
