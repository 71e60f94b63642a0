"""Module capture: log every module's outputs (and their gradients) into a run.

When a port's final outputs disagree, the question is *where* the two
models part ways. `capture` hooks every module (torch.nn.Module) or layer
(paddle.nn.Layer) of a model and logs what each one computes, so that a
compare of the two runs shows the first module whose output (or, in the
backward pass, whose output gradient) differs::

    import reprod_client

    client = reprod_client.Client("127.0.0.1:50051")
    with client.open_run("team42/bert-torch", framework="torch") as run, \\
         reprod_client.capture(model, run) as cap:
        for batch in data:
            loss = loss_fn(model(batch), labels)
            loss.backward()
            cap.next_step()     # the next batch is step 1; call counters restart

Keys (checkpoint "layers" by default; `[root]` is the model itself)::

    bert.encoder.layer.0.attention.self.query/forward/output/0
    bert.encoder.layer.0.attention.self.query/backward/grad_output/0
    bert.encoder.layer.0.attention.self.query/backward/param_grad/weight   # params=True
    [root]/forward/output/0
    decoder/forward/output/1/0          # outputs (a, (b, c)): b
    heads/forward/output/logits         # a dict or a Hugging Face ModelOutput
    embed/forward/input/0               # inputs=True: positional inputs
    block[1]/forward/output/0           # the second call of `block` in this step

* **Forward**: a forward (post) hook on each selected module logs its
  outputs, flattened: a single tensor is `output/0`, a tuple or list is
  indexed (`output/1`, nested `output/1/0`), a mapping uses its keys;
  anything that is not a tensor (None, ints, strings) is skipped. With
  `inputs=True` the positional inputs are logged as `input/<i>` in the same
  `run.log` call, before the outputs. Keyword arguments are not seen (torch
  1.13's hooks do not receive them).
* **Repeated calls**: the first call of a module in a step has no suffix,
  the second logs under `<module>[1]/...`, the third `<module>[2]/...`.
  `next_step()` restarts the counts.
* **Backward** (`"backward" in what`): every output tensor that takes part
  in autograd (torch: `requires_grad`; paddle: `not stop_gradient`) gets a
  tensor hook that logs its gradient as `<module>/backward/grad_output/<the
  output's index path>` at the step of the forward call. Gradients are
  logged in the order the hooks fire, i.e. backward execution order, each
  at most once per forward call (a second backward through the same graph
  logs nothing more). The hooks return None: the gradient is not modified.
  A backward may run after `next_step()` (it logs at its forward's step);
  hooks still unfired one step later are removed, so outputs of a forward
  that never sees a backward are not kept alive.
* **Parameter gradients** (`params=True`, with "backward" in `what`): a
  hook on each of a selected module's own parameters (not its children's)
  logs the parameter's gradient of this backward pass, before it is added
  to `.grad`, as `<module>/backward/param_grad/<name>` (`weight`, `bias`)
  at the step of the last forward call (nothing on steps every_n_steps
  skips). A parameter shared by
  two modules is logged under the first. Paddle's Linear weight is torch's
  transposed: judge those keys with the policy's `transpose` list.
* **Order**: a module's forward hook runs when its forward returns, so
  children are logged before their parent (post-order) and the arrival
  order of the run is the order in which the model computed them; the
  compare's first failure in that order is where the port first diverges.
* **stats=True** logs, in place of each tensor, four float64 statistics
  computed where the tensor lives (on the GPU for a CUDA tensor, so only 32
  bytes per tensor leave the device): ``[mean, mean |x|, root mean square,
  max |x|]`` (zeros for an empty tensor), under the same key. For models too
  large to dump; judge them with a relative rule, e.g. ``{match:
  "layers/*", checks: [{metric: allclose, rtol: 1e-4, atol: 1e-7}]}``, and
  compare a stats run only with another stats run (shapes differ otherwise).
* **every_n_steps=N** logs only on steps where `(step - first step) % N ==
  0`; the hooks stay registered and do nothing on the other steps.
* **include / exclude**: lists of fnmatch globs on the module path
  (`"bert.encoder.*"`, `"*.LayerNorm"`); a module is captured when it
  matches an include glob (all modules when include is None) and no exclude
  glob (exclude wins). `*` crosses dots. To match the root literally, write
  `"[[]root]"` (fnmatch reads `[...]` as a character class).

Capturing does not change the model: tensors are copied (detached) by
`Run.log`, which streams them in the background; hooks return None. Every
hook is removed when the `with` block ends (or at `close()`); a tensor hook
that fires after that logs nothing.

Shared modules (one instance under two names) are hooked once, under the
first name `named_modules()` / `named_sublayers()` gives them. Tensors on
any device work (they are copied to host by `Run.log`).

This module imports neither torch nor paddle: the framework is recognised
from the model's class hierarchy, and the already imported framework module
is taken from sys.modules.
"""
import fnmatch
import math
import sys
from collections.abc import Mapping

from . import tensors as _tensors

__all__ = ["capture", "Capture", "ROOT_NAME"]

#: The module path under which the model itself is logged. Brackets cannot
#: occur in a Python attribute name, so no submodule can collide with it.
ROOT_NAME = "[root]"

_WHAT = ("forward", "backward")


def capture(model, run, checkpoint="layers", what=("forward", "backward"), inputs=False,
            include=None, exclude=None, every_n_steps=1, step=0, stats=False, params=False):
    """Hooks `model` (a torch.nn.Module or paddle.nn.Layer) so that every
    selected module's outputs -- and, with "backward" in `what`, the
    gradients of those outputs -- are logged into `run` under `checkpoint`
    at the current step. Returns a `Capture`; use it as a context manager
    (the hooks are removed when the block ends) or call `close()`.

    run: a reprod_client.Run (or anything with Run.log's signature).
    checkpoint: checkpoint name of every tensor logged (default "layers").
    what: "forward", "backward" or both (a string or a sequence).
    inputs: also log each module's positional inputs (forward only).
    include, exclude: fnmatch globs on module paths ("[root]" is the model);
        exclude wins; None = every module.
    every_n_steps: log only every N-th step, counted from `step`.
    step: the first step's number; `Capture.next_step()` advances it.
    stats: log [mean, mean |x|, rms, max |x|] (float64, computed on the
        tensor's device) instead of each tensor.
    params: also log each module's own parameter gradients (backward).

    Raises TypeError when `model` is neither a torch module nor a paddle
    layer, ValueError for a bad argument or when include/exclude select no
    module (the message lists some of the model's module paths).
    """
    return Capture(model, run, checkpoint=checkpoint, what=what, inputs=inputs,
                   include=include, exclude=exclude, every_n_steps=every_n_steps, step=step,
                   stats=stats, params=params)


def _framework_of_model(model):
    """"torch" or "paddle" when some class in the model's hierarchy is
    torch's Module or paddle's Layer; None otherwise."""
    for cls in type(model).__mro__:
        root = (cls.__module__ or "").split(".", 1)[0]
        if root == "torch" and cls.__name__ == "Module":
            return "torch"
        if root == "paddle" and cls.__name__ == "Layer":
            return "paddle"
    return None


def _globs(value, name):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    value = list(value)
    for g in value:
        if not isinstance(g, str):
            raise ValueError(f"capture: {name} must be a list of glob strings, got {g!r}")
    return value


class _Adapter:
    """What differs between torch and paddle: module listing, hooks, and
    what a tensor taking part in autograd is."""

    def __init__(self, framework):
        self.framework = framework
        self.fw = sys.modules[framework]  # imported by whoever built the model
        self.tensor_type = self.fw.Tensor

    def named_modules(self, model):
        if self.framework == "torch":
            return list(model.named_modules())
        return list(model.named_sublayers(include_self=True))

    def own_parameters(self, module):
        """(name, parameter) of the module itself, not of its children."""
        if self.framework == "torch":
            return list(module.named_parameters(recurse=False))
        return list(module.named_parameters(include_sublayers=False))

    def add_forward_hook(self, module, fn):
        if self.framework == "torch":
            return module.register_forward_hook(fn)
        return module.register_forward_post_hook(fn)

    def is_tensor(self, value):
        return isinstance(value, self.tensor_type)

    def wants_grad(self, t):
        if self.framework == "torch":
            return bool(t.requires_grad)
        return not bool(t.stop_gradient)

    def summary(self, t):
        """[mean, mean |x|, rms, max |x|] of `t` as a float64 tensor of 4 on
        t's device (no autograd history)."""
        fw = self.fw
        if self.framework == "torch":
            x = t.detach()
            n = x.numel()
            if n == 0:
                return fw.zeros(4, dtype=fw.float64, device=x.device)
            if not x.is_floating_point():
                x = x.to(dtype=fw.float64)
            # Reductions that accumulate in float64 without a float64 copy
            # of the tensor (2.5x faster than converting first, on CPU).
            a = x.abs()
            f64 = fw.float64
            return fw.stack([x.sum(dtype=f64) / n, a.sum(dtype=f64) / n,
                             fw.linalg.vector_norm(x, dtype=f64) / math.sqrt(n),
                             a.max().to(dtype=f64)])
        x = t.detach().astype("float64")
        if x.size == 0:
            return fw.zeros([4], dtype="float64")
        a = x.abs()
        return fw.stack([x.mean(), a.mean(), (x * x).mean().sqrt(), a.max()]).reshape([4])


class Capture:
    """The hooks `capture()` installed on a model. Attributes:

    step: the current step (logged tensors carry it).
    stats: whether statistics are logged in place of tensors.
    modules: the captured module paths, in `named_modules()` order.
    framework: "torch" or "paddle".
    """

    def __init__(self, model, run, *, checkpoint="layers", what=("forward", "backward"),
                 inputs=False, include=None, exclude=None, every_n_steps=1, step=0,
                 stats=False, params=False):
        framework = _framework_of_model(model)
        if framework is None:
            raise TypeError("capture: the model must be a torch.nn.Module or a paddle.nn.Layer, "
                            f"got {type(model).__module__}.{type(model).__qualname__}")
        _tensors.validate_checkpoint(checkpoint)
        what = (what,) if isinstance(what, str) else tuple(what)
        if not what or any(w not in _WHAT for w in what):
            raise ValueError(f"capture: what must name 'forward' and/or 'backward', got {what!r}")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) \
                or every_n_steps < 1:
            raise ValueError(f"capture: every_n_steps must be an int >= 1, got {every_n_steps!r}")
        if isinstance(step, bool) or not hasattr(step, "__index__"):
            raise ValueError(f"capture: step must be an int, got {step!r}")
        self.framework = framework
        self.checkpoint = checkpoint
        self.forward = "forward" in what
        self.backward = "backward" in what
        self.inputs = bool(inputs)
        self.stats = bool(stats)
        self.params = bool(params)
        if self.params and not self.backward:
            raise ValueError("capture: params=True logs gradients: put 'backward' in what")
        self.every_n_steps = every_n_steps
        self.first_step = int(step.__index__())
        self.step = self.first_step
        self._run = run
        self._fw = _Adapter(framework)
        self._calls = {}          # module path -> calls seen in this step
        self._module_hooks = []   # forward hook handles
        self._tensor_hooks = []   # [handle, fired, step] of gradient hooks
        self._param_hooks = []    # parameter gradient hooks (live until close)
        self._forward_step = self.step  # step of the last captured forward call
        self._active = True

        include, exclude = _globs(include, "include"), _globs(exclude, "exclude")
        named = []
        for name, module in self._fw.named_modules(model):
            path = name or ROOT_NAME
            if include is not None and not any(fnmatch.fnmatchcase(path, g) for g in include):
                continue
            if exclude is not None and any(fnmatch.fnmatchcase(path, g) for g in exclude):
                continue
            try:
                _tensors.validate_key(path)
            except ValueError as e:
                raise ValueError(f"capture: module path {path!r} cannot be a tensor key: {e}") \
                    from None
            named.append((path, module))
        if not named:
            some = [n or ROOT_NAME for n, _ in self._fw.named_modules(model)][:12]
            raise ValueError(f"capture: include={include!r} exclude={exclude!r} select no module "
                             f"of {type(model).__qualname__}; its module paths include {some}")
        self.modules = [path for path, _ in named]
        for path, module in named:
            self._module_hooks.append(self._fw.add_forward_hook(module, self._make_hook(path)))
        if self.params:
            seen = set()
            for path, module in named:
                for pname, param in self._fw.own_parameters(module):
                    if id(param) in seen or not self._fw.wants_grad(param):
                        continue
                    seen.add(id(param))
                    self._param_hooks.append(param.register_hook(
                        self._make_param_hook(f"{path}/backward/param_grad/{pname}", path)))

    # --- public API -------------------------------------------------------

    @property
    def capturing(self):
        """Whether the current step is one that is logged."""
        return self._active and (self.step - self.first_step) % self.every_n_steps == 0

    def next_step(self):
        """Advances to the next step: later forward calls log at step + 1
        and their per-module call counts start again from the first call.
        Gradient hooks of the step just ended still log (at that step) when
        its backward runs later; those of older steps that never fired are
        removed, so outputs that never see a backward (an evaluation pass
        with autograd on) are not kept alive. Returns the new step."""
        self.step += 1
        self._calls.clear()
        keep = []
        for entry in self._tensor_hooks:
            handle, fired, step = entry
            if fired:
                continue
            if step < self.step - 1:
                handle.remove()
                continue
            keep.append(entry)
        self._tensor_hooks = keep
        return self.step

    def close(self):
        """Removes every hook (module and tensor hooks); idempotent. Does not
        flush or close the run."""
        self._active = False
        for handle in self._module_hooks:
            handle.remove()
        self._module_hooks = []
        for handle, fired, _ in self._tensor_hooks:
            if not fired:
                handle.remove()
        self._tensor_hooks = []
        for handle in self._param_hooks:
            handle.remove()
        self._param_hooks = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def __repr__(self):
        return (f"<reprod_client.Capture {self.framework} {len(self.modules)} modules, "
                f"checkpoint {self.checkpoint!r}, step {self.step}"
                f"{'' if self._active else ', closed'}>")

    # --- hooks --------------------------------------------------------------

    def _make_hook(self, path):
        def hook(module, args, output):
            self._forward_step = self.step  # parameter gradients log at it
            if not self.capturing:
                return None
            n = self._calls.get(path, 0)
            self._calls[path] = n + 1
            prefix = path if n == 0 else f"{path}[{n}]"
            outs = {}
            self._leaves(output, "", outs, path)
            if self.forward:
                logged = {}
                if self.inputs:
                    ins = {}
                    self._leaves(tuple(args), "", ins, path)
                    logged.update({f"{prefix}/forward/input/{k}": v for k, v in ins.items()})
                logged.update({f"{prefix}/forward/output/{k}": v for k, v in outs.items()})
                if logged:
                    self._log(logged, path)
            if self.backward:
                for k, t in outs.items():
                    if self._fw.wants_grad(t):
                        self._watch_grad(t, f"{prefix}/backward/grad_output/{k}", path)
            return None
        return hook

    def _leaves(self, value, index, out, path):
        """Flattens `value` into out[index path] = tensor, skipping
        non-tensor leaves."""
        if self._fw.is_tensor(value):
            out[index or "0"] = value
        elif isinstance(value, Mapping):  # dict, Hugging Face ModelOutput
            for k, v in value.items():
                if not isinstance(k, str):
                    k = str(k)
                self._leaves(v, f"{index}/{k}" if index else k, out, path)
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                self._leaves(v, f"{index}/{i}" if index else str(i), out, path)

    def _make_param_hook(self, key, path):
        def param_hook(grad):
            step = self._forward_step
            if self._active and (step - self.first_step) % self.every_n_steps == 0:
                self._log({key: grad}, path, step=step)
            return None
        return param_hook

    def _watch_grad(self, t, key, path):
        step = self.step
        entry = [None, False, step]

        def grad_hook(grad):
            if entry[1] or not self._active:
                return None
            entry[1] = True
            self._log({key: grad}, path, step=step)
            return None

        entry[0] = t.register_hook(grad_hook)
        self._tensor_hooks.append(entry)

    def _log(self, tensors, path, step=None):
        if self.stats:
            tensors = {k: self._fw.summary(v) for k, v in tensors.items()}
        try:
            self._run.log(self.checkpoint, tensors, step=self.step if step is None else step)
        except ValueError as e:
            raise ValueError(f"capture of module {path!r} into checkpoint "
                             f"{self.checkpoint!r}: {e}") from None
