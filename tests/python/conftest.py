"""Shared fixtures for the Python oracle tests.

The tests drive the real `reprodctl` binary and check what it says against
independent oracles: numpy float64 computations and the incumbent `reprod_log`
package itself (from PyPI).
"""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("REPROD_BIN_DIR", ROOT / "build"))
REPRODCTL = BIN_DIR / "client" / "cpp" / "reprodctl"


def _stub_paddle():
    """reprod_log imports paddle at module load, only for type annotations
    (paddle.Tensor, paddle.nn.Layer) and helpers we do not call. Its diff
    functions (compute_diff, check_print_diff) are pure numpy, so a stub
    module lets us use them as the oracle without installing PaddlePaddle."""
    try:
        import paddle  # noqa: F401
        return
    except ImportError:
        pass
    paddle = types.ModuleType("paddle")
    paddle.Tensor = type("Tensor", (), {})
    paddle.nn = types.SimpleNamespace(Layer=type("Layer", (), {}))
    sys.modules["paddle"] = paddle


_stub_paddle()


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_reprodctl(*args, timeout=300, cwd=None):
    if not REPRODCTL.exists():
        pytest.fail(f"reprodctl not built at {REPRODCTL} (set REPROD_BIN_DIR)")
    proc = subprocess.run([str(REPRODCTL), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    return Result(proc)


@pytest.fixture
def reprodctl():
    return run_reprodctl
