"""Which deep-learning frameworks the test interpreter really has.

The main venv (.venv) has Debian's torch and PyPI's paddle; scripts/test.sh
also runs the client suites in .venv-np2 (numpy 2.x), which has neither on
purpose. Tests that need a framework carry `@pytest.mark.requires_torch` or
`@pytest.mark.requires_paddle` (conftest.py registers them). Where a framework
is missing they are skipped, with the reason shown, only when the venv says
frameworks are optional (REPROD_TEST_FRAMEWORKS=optional, set by test.sh for
the numpy 2 pass); anywhere else they fail, so the main venv never drops them
silently.

reprod_log imports paddle at module load only for type annotations
(paddle.Tensor, paddle.nn.Layer) and helpers we do not call; its diff
functions are pure numpy. install_paddle_stub() lets reprod_log serve as the
oracle where paddle is absent. It never shadows a real paddle.
"""
import importlib.util
import os
import sys
import types

STUB_ATTR = "__reprod_test_stub__"


def install_paddle_stub():
    """Imports the real paddle when there is one, else puts a stub module
    (Tensor and nn.Layer types only) into sys.modules."""
    try:
        import paddle  # noqa: F401
        return
    except ImportError:
        pass
    paddle = types.ModuleType("paddle")
    paddle.Tensor = type("Tensor", (), {})
    paddle.nn = types.SimpleNamespace(Layer=type("Layer", (), {}))
    setattr(paddle, STUB_ATTR, True)
    sys.modules["paddle"] = paddle


def available(name):
    """True when `name` (torch or paddle) is a real, importable framework;
    torch is looked up without importing it (its tests run in subprocesses)."""
    module = sys.modules.get(name)
    if module is not None:
        return not getattr(module, STUB_ATTR, False)
    return importlib.util.find_spec(name) is not None


def optional():
    """True when missing frameworks skip instead of failing."""
    return os.environ.get("REPROD_TEST_FRAMEWORKS") == "optional"
