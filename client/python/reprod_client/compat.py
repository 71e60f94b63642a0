"""Drop-in replacement for reprod_log's ReprodLogger and ReprodDiffHelper.

Change one import and a reprod_log script writes the same files and logs::

    # from reprod_log import ReprodLogger, ReprodDiffHelper
    from reprod_client.compat import ReprodLogger, ReprodDiffHelper

    logger = ReprodLogger()
    logger.add("logits", out.detach().cpu().numpy())
    logger.save("log_reprod/forward_torch.npy")     # also streams, see below

    helper = ReprodDiffHelper()
    torch_info = helper.load_info("log_reprod/forward_torch.npy")
    paddle_info = helper.load_info("log_reprod/forward_paddle.npy")
    helper.compare_info(torch_info, paddle_info)
    helper.report(diff_method="mean", diff_threshold=1e-6, path="forward_diff.log")

Same as reprod_log 1.0.1
------------------------
- ``ReprodLogger``: ``add(key, val)`` asserts ``isinstance(val, np.ndarray)``
  with reprod_log's message and keeps a reference (no copy); ``remove(key)``
  prints ``"<key> is not in dict_keys([...])"`` for a missing key; ``clear()``;
  ``data`` is the dict itself; ``save(path)`` creates the parent folder and
  writes ``np.save(path, data)``: the same bytes as reprod_log (numpy adds
  ``.npy`` when the name lacks it).
- ``ReprodDiffHelper``: ``load_info`` is ``np.load(path, allow_pickle=True)
  .tolist()`` after asserting the file exists; ``compare_info(info1, info2)``
  asserts both are dicts with the same keys (AssertionError) and stores
  ``self.diff_dict``: per key ``{"mean", "max", "min"}`` of ``|info1 - info2|``
  computed with numpy exactly as reprod_log does (numpy broadcasting, so a
  loss of shape () against one of shape (1,) compares; an array whose
  transpose has the other's shape is transposed, printing
  ``transpose sub_data1``; nested dicts recurse; other values raise
  NotImplementedError). ``report(diff_method="mean", diff_threshold=1e-6,
  path="./diff.txt")`` writes reprod_log's lines
  (``[YYYY/MM/DD HH:MM:SS] root INFO: key: ``, then
  ``\\tmean diff: check passed: True, value: 0.0``, last
  ``diff check passed|failed``) to stdout and to ``path`` (mode "w", parent
  folder created; ``path=None``: stdout only) and returns None.
  ``diff_method`` is "mean", "max", "min", "all" (= min, max, mean) or a list
  of those; within one key a failed method marks the methods printed after it
  ``check passed: False`` too, as reprod_log does.

Deliberate differences from reprod_log
--------------------------------------
- A statistic that is NaN fails its check. reprod_log passes it
  (``nan > threshold`` is False); docs/design.md §Diff semantics forbids
  copying that.
  The line reads ``check passed: False, value: nan``.
- ``report()`` logs through a private logger named "root" (hence the same
  line format) that is discarded when report() returns, with its file
  closed. reprod_log instead adds a stdout and a file handler to Python's
  root logger on every call and never removes them, so a second report() in
  the same process printed every line twice and also appended it to the first
  report's file, and later ``logging`` calls of the program went to stdout
  and to the diff file at DEBUG level. Here each report's file holds exactly
  its own lines and the root logger is left alone.
- ``report()`` also sets ``self.passed`` (bool); it still returns None.
- AssertionErrors for mismatched keys name the key.
- Importing this module imports neither paddle nor torch (reprod_log imports
  paddle at load, for type hints).

Streaming to a reprod server
----------------------------
A ReprodLogger streams when given a run, either by keywords
``ReprodLogger(server="host:port", run="team/bert-paddle")`` or by the
environment: ``REPROD_RUN`` together with ``REPROD_SERVER`` (``REPROD_SERVER``
alone, as reprodctl uses it, does not turn streaming on). ``run=`` alone
uses ``REPROD_SERVER`` or the client's default address; ``run=False`` or
``run=""`` turns streaming off whatever the environment says. The run is
created when it does not exist (as ``reprodctl push`` does) and is never
sealed by this module: a reprod_log pipeline writes its checkpoints from
several scripts into one run; seal it when all are in.

When tensors go to the server:

- Default: at ``save(path)``. reprod_log's ``add()`` has no checkpoint and
  keeps a reference that later code may mutate, overwrite (``add`` again) or
  ``remove``; what counts is the dict at ``save()``. So ``save()`` first
  writes the .npy exactly as reprod_log does, then streams every key of
  ``data`` under checkpoint = the file name's stem without one framework
  suffix (``forward_paddle.npy`` -> ``forward``; suffixes ``_torch``,
  ``_pytorch``, ``_pt``, ``_paddle``, ``_pd``, ``_benchmark``, ``_ref``,
  ``_reference``, ``_cand``, ``_candidate``: the rule of ``reprodctl push``,
  client/cpp/file_runs.cc), then waits until the server acknowledged every
  tensor. The server then holds what ``reprodctl push <that file> --run RUN``
  would store: the run's framework is taken from the suffix (paddle / torch)
  unless ``framework=`` is given, and arrays whose dtype the wire lacks
  (complex, strings, objects) are skipped with a ``UserWarning`` naming key
  and dtype, like push's notes; uint16/32/64 arrays are sent as they are.
- ``ReprodLogger(checkpoint="forward", run=...)``: live, as a training script
  streams with the client.
  Each ``add()`` hands the tensor to the client's background sender at once
  (the client copies it, so later in-place changes reach the .npy but not the
  server); ``save(path)`` writes the .npy, sends keys put into ``data``
  without ``add()``, and waits for every acknowledgement. The file name
  names neither the checkpoint nor the framework then (pass ``framework=``). A key already sent cannot be taken back by
  ``remove``/``clear``.

Errors: every server-side failure (unreachable, refused tensor, sealed run,
different bytes already stored under the same checkpoint/key: runs are
append-only unless created with overwrite) raises from ``save()``: a
``reprod_client.ReprodError`` (``ServerUnavailable`` when unreachable) whose
message names the server address and the run. It is never swallowed, and it
never changes the .npy, which is written before anything is sent. In live
mode a failure during ``add()`` is kept and raised by the next ``save()``, so
a training loop is not interrupted between checkpoints. Saving the same data
twice is harmless (the server acknowledges identical tensors as already
present).
"""
import logging
import math
import os
import pickle
import sys
import warnings

import numpy as np

from .tensors import supports_numpy_dtype, validate_checkpoint, validate_run_name

__all__ = [
    "ReprodLogger",
    "ReprodDiffHelper",
    "checkpoint_name_from_path",
    "framework_from_path",
]

# reprodctl's framework suffixes, in the order they are tried
# (client/cpp/file_runs.cc FrameworkSuffixes).
_FRAMEWORK_SUFFIXES = ("torch", "pytorch", "pt", "paddle", "pd", "benchmark",
                       "ref", "reference", "cand", "candidate")


def _is_valid(validate, name):
    """Whether tensors.validate_*(name) accepts it (the wire's name rules
    live there once)."""
    try:
        validate(name)
        return True
    except ValueError:
        return False


_ADD_MESSAGE = '''val must be np.ndarray, you can convert it by follow code:
                1. Torch GPU: torch_tensor.cpu().detach().numpy()
                2. Torch CPU: torch_tensor.detach().numpy()
                3. Paddle: paddle_tensor.numpy()'''


def _file_stem(path):
    """'dir/forward_torch.npy' -> 'forward_torch' (client/cpp/file_runs.cc)."""
    base = path[path.rfind("/") + 1:]
    dot = base.rfind(".")
    if dot > 0:
        base = base[:dot]
    return base


def checkpoint_name_from_path(path):
    """The checkpoint a file's tensors belong to, as ``reprodctl push`` names
    it: the file name without directory, last extension and one framework
    suffix ('log/forward_paddle.npy' -> 'forward', 'x.npz' -> 'x')."""
    stem = _file_stem(os.fsdecode(os.fspath(path)))
    for suffix in _FRAMEWORK_SUFFIXES:
        tail = "_" + suffix
        if len(stem) > len(tail) and stem.endswith(tail):
            return stem[:-len(tail)]
    return stem


def framework_from_path(path):
    """'paddle' or 'torch' from a file name's framework suffix, else ''
    (reprodctl push's rule)."""
    stem = _file_stem(os.fsdecode(os.fspath(path)))
    if stem.endswith(("_paddle", "_pd")):
        return "paddle"
    if stem.endswith(("_torch", "_pytorch", "_pt")):
        return "torch"
    return ""


def _saved_path(path):
    """The file np.save(path, ...) writes: numpy appends '.npy' when missing."""
    p = os.fspath(path)
    if not p.endswith(".npy"):
        p += ".npy"
    return p


class ReprodLogger(object):
    """reprod_log.ReprodLogger: a dict of numpy arrays saved with np.save,
    optionally streamed to a reprod server (see the module docstring).

    Keyword arguments (all optional; without a run nothing is streamed):
      server: "host:port" of reprodd (default $REPROD_SERVER, then the
        client's default).
      run: "namespace/name" to stream into (default $REPROD_RUN when
        $REPROD_SERVER or server= is set); False or "" disables streaming.
      checkpoint: stream each add() at once under this checkpoint instead of
        at save() under the file's checkpoint name.
      framework: the run's framework when this logger creates it (default:
        from the saved file's suffix).
      overwrite: create the run letting a re-sent key replace its bytes; it
        must match the setting of an existing run (reprod_client refuses
        to open a run with the other setting).
      token: passed to reprod_client.Client.
    Raises ValueError for a malformed run or checkpoint name.
    """

    def __init__(self, *, server=None, run=None, checkpoint=None,
                 framework=None, overwrite=False, token=None):
        self._data = dict()
        if run is None:
            env_run = os.environ.get("REPROD_RUN", "")
            if env_run and (server or os.environ.get("REPROD_SERVER")):
                run = env_run
        self._run_name = run or None
        self._server = server or os.environ.get("REPROD_SERVER") or None
        self._token = token
        self._framework = framework
        self._overwrite = bool(overwrite)
        self._checkpoint = checkpoint
        if self._run_name is not None and not _is_valid(validate_run_name, self._run_name):
            raise ValueError(
                f"reprod_client.compat: run name {self._run_name!r} is not "
                "'namespace/name' (each part 1-128 of [A-Za-z0-9_.-])")
        if checkpoint is not None and not _is_valid(validate_checkpoint, checkpoint):
            raise ValueError(
                f"reprod_client.compat: checkpoint {checkpoint!r} is not 1-128 "
                "of [A-Za-z0-9_.+-]")
        self._client = None
        self._run = None        # open reprod_client.Run in live mode
        self._sent = {}         # live mode: key -> the array object sent
        self._error = None      # live mode: failure kept for save()

    @property
    def data(self):
        return self._data

    @property
    def streaming(self):
        """True when this logger sends its tensors to a server."""
        return self._run_name is not None

    def add(self, key, val):
        """Adds a key-val pair (val must be a numpy array; it is kept by
        reference, as reprod_log does). In live mode also sends it."""
        assert isinstance(val, np.ndarray), _ADD_MESSAGE
        self._data[key] = val
        if self.streaming and self._checkpoint is not None and self._error is None:
            try:
                self._send_live({key: val}, stacklevel=3)  # 3: the caller of add()
            except Exception as e:  # kept for save(); training goes on
                self._error = e
                self._sent.clear()  # what was queued may be lost: resend at save
                self._drop_run()

    def remove(self, key):
        """Removes key (prints a note when absent, as reprod_log does)."""
        if key in self._data:
            self._data.pop(key)
        else:
            print('{} is not in {}'.format(key, self._data.keys()))

    def clear(self):
        """Empties the dict."""
        self._data.clear()

    def save(self, path):
        """np.save(path, data) as reprod_log does; then, when streaming, sends
        the tensors and waits until the server stored them. Raises
        reprod_client.ReprodError naming the server address on any server
        failure (the file is already written then)."""
        folder = os.path.dirname(path)
        if len(folder) >= 1:
            os.makedirs(folder, exist_ok=True)
        np.save(path, self._data)
        if self.streaming:
            self._stream_saved(_saved_path(path))

    # --- streaming ------------------------------------------------------

    def _address(self):
        try:
            return self._get_client().address   # a channel object; no RPC
        except Exception:
            return self._server or os.environ.get("REPROD_SERVER") or "the default address"

    def _get_client(self):
        if self._client is None:
            from reprod_client import Client
            self._client = Client(address=self._server, token=self._token)
        return self._client

    def _open_run(self, framework):
        return self._get_client().open_run(self._run_name, framework=framework or None,
                                           overwrite=self._overwrite)

    def _drop_run(self):
        run, self._run = self._run, None
        if run is not None:
            try:
                run.close()
            except Exception:
                pass

    def _send_live(self, entries, stacklevel):
        tensors = _wire_tensors(entries, stacklevel + 1)
        if self._run is None:
            self._run = self._open_run(self._framework)
        if tensors:
            self._run.log(self._checkpoint, tensors)
        for key, val in entries.items():
            self._sent[key] = val

    def _stream_saved(self, saved_path):
        try:
            if self._checkpoint is not None:
                self._finish_live()
            else:
                self._push_file_data(saved_path)
        except Exception as e:
            wrapped = _with_address(e, self._address(), self._run_name, saved_path)
            if wrapped is e:
                raise
            raise wrapped from e

    def _finish_live(self):
        error, self._error = self._error, None
        if error is not None:
            raise error
        unsent = {k: v for k, v in self._data.items() if self._sent.get(k) is not v}
        try:
            self._send_live(unsent, stacklevel=5)  # 5: the caller of save()
            run, self._run = self._run, None
            run.close()     # flush: waits for every ack, raises the first failure
        except Exception:
            self._sent.clear()  # unknown what was stored: resend at the next save
            self._drop_run()
            raise

    def _push_file_data(self, saved_path):
        checkpoint = checkpoint_name_from_path(saved_path)
        if not _is_valid(validate_checkpoint, checkpoint):
            raise ValueError(
                f"checkpoint name {checkpoint!r} from file {saved_path!r} is not "
                "1-128 of [A-Za-z0-9_.+-]; rename the file or pass "
                "ReprodLogger(checkpoint=...)")
        tensors = _wire_tensors(self._data, stacklevel=5)
        framework = self._framework
        if framework is None:
            framework = framework_from_path(saved_path)
        run = self._open_run(framework)
        try:
            if tensors:
                run.log(checkpoint, tensors)
            run.flush()
        except Exception:
            try:
                run.close()
            except Exception:
                pass
            raise
        run.close()


def _flatten(data, prefix, out):
    for key, val in data.items():
        if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
            raise ValueError(f"key {key!r} ({type(key).__name__}) is not a str or int; "
                             "the server names tensors by string keys")
        name = f"{prefix}{key}"
        if isinstance(val, dict):
            _flatten(val, name + "/", out)
        else:
            out[name] = val


def _wire_tensors(data, stacklevel):
    """data's arrays as {flat key: array}, nested dicts flattened to 'a/b';
    arrays of a dtype the wire lacks and non-array values are skipped with a
    UserWarning (reprodctl push notes them the same way), attributed to the
    frame `stacklevel` levels up from here (the user's add()/save() call)."""
    flat = {}
    _flatten(data, "", flat)
    out = {}
    for key, val in flat.items():
        if isinstance(val, np.generic):
            val = np.asarray(val)
        if not isinstance(val, np.ndarray):
            warnings.warn(f"reprod_client.compat: {key}: {type(val).__name__} is not "
                          "an array; not sent to the server", stacklevel=stacklevel)
            continue
        if not supports_numpy_dtype(val.dtype):
            warnings.warn(f"reprod_client.compat: {key}: unsupported dtype {val.dtype.str!r}; "
                          "not sent to the server", stacklevel=stacklevel)
            continue
        out[key] = val
    return out


def _with_address(error, address, run, path):
    """error, with the server address and run in its message when missing,
    keeping its type where the type allows."""
    if address in str(error):
        return error
    message = f"reprod server {address}, run {run}: streaming {path}: {error}"
    from reprod_client.errors import ReprodError
    if isinstance(error, ReprodError):
        return type(error)(message, code=error.code, details=error.details,
                           address=error.address or address, run=error.run or run)
    try:
        return type(error)(message)
    except Exception:
        return ReprodError(message, address=address, run=run)


# --- ReprodDiffHelper -------------------------------------------------------

_LOG_FORMAT = '[%(asctime)s] %(name)s %(levelname)s: %(message)s'
_LOG_DATEFMT = "%Y/%m/%d %H:%M:%S"


def _check_data(data1, data2):
    for k in data1:
        assert k in data2, f"key {k!r} in info1 but not found in info2"
    for k in data2:
        assert k in data1, f"key {k!r} in info2 but not found in info1"


def _compute_diff(data1, data2):
    """reprod_log.compare.compute_diff: {key: {'mean', 'max', 'min'}} of
    |data1 - data2| per key, recursing into dicts."""
    out_dict = {}
    for k in data1:
        assert k in data2, f"key {k!r} in info1 but not found in info2"
        sub_data1, sub_data2 = data1[k], data2[k]
        assert type(sub_data1) == type(sub_data2), (
            f"key {k!r}: {type(sub_data1).__name__} against {type(sub_data2).__name__}")
        if isinstance(sub_data1, dict):
            out_dict[k] = _compute_diff(sub_data1, sub_data2)
        elif isinstance(sub_data1, np.ndarray):
            if (sub_data1.shape != sub_data2.shape
                    and sub_data1.transpose().shape == sub_data2.shape):
                print('transpose sub_data1')
                sub_data1 = sub_data1.transpose()
            diff = np.abs(sub_data1 - sub_data2)
            out_dict[k] = {
                'mean': diff.mean(),
                'max': diff.max(),
                'min': diff.min(),
            }
        else:
            raise NotImplementedError
    return out_dict


def _fails(value, threshold):
    """reprod_log's `value > threshold`, except that NaN fails."""
    try:
        if math.isnan(value):
            return True
    except TypeError:
        pass
    return value > threshold


def _check_print_diff(diff_dict, diff_method='mean', diff_threshold=1e-6,
                      print_func=print, indent='\t', level=0):
    """reprod_log.utils.check_print_diff (NaN fails): prints each key's
    checks and returns whether all passed."""
    if level == 0:
        if isinstance(diff_method, str):
            if diff_method == 'all':
                diff_method = ['min', 'max', 'mean']
            else:
                diff_method = [diff_method]
    for method in diff_method:
        assert method in ['all', 'min', 'max', 'mean'], (
            f"diff_method {method!r} is not one of min, max, mean, all")

    all_passed = True
    cur_indent = indent * level
    for k, v in diff_dict.items():
        if 'mean' in v and 'min' in v and 'max' in v and len(v) == 3:
            print_func('{}{}: '.format(cur_indent, k))
            sub_passed = True
            for method in diff_method:
                if _fails(v[method], diff_threshold):
                    sub_passed = False
                print_func("{}{} diff: check passed: {}, value: {}".format(
                    cur_indent + indent, method, sub_passed, v[method]))
                all_passed = all_passed and sub_passed
        else:
            print_func('{}{}'.format(cur_indent, k))
            sub_passed = _check_print_diff(v, diff_method, diff_threshold,
                                           print_func, indent, level + 1)
            all_passed = all_passed and sub_passed
    return all_passed


def _report_logger(log_file):
    """A logger named 'root' writing reprod_log's format to stdout and
    log_file (mode 'w'), outside logging's registry. Returns (logger,
    handlers to close)."""
    logger = logging.Logger('root', logging.DEBUG)
    logger.propagate = False
    formatter = logging.Formatter(_LOG_FORMAT, datefmt=_LOG_DATEFMT)
    handlers = [logging.StreamHandler(stream=sys.stdout)]
    if log_file is not None:
        dir_name = os.path.dirname(log_file)
        if len(dir_name) > 0 and not os.path.exists(dir_name):
            os.makedirs(dir_name)
        handlers.append(logging.FileHandler(log_file, 'w'))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger, handlers


# Globals a reprod_log .npy dict needs: np.save(dict) pickles a 0-d object
# array whose items are arrays (numpy 1.x and 2.x module names).
_NUMPY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})
# numpy 2 renamed numpy.core to numpy._core and pickles under the new name,
# which numpy 1.x cannot import; numpy 2 only keeps numpy.core as a deprecated
# alias. The two sides of a port often run different numpy majors, so both
# spellings resolve to the installed numpy's own module.
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".", 1)[0]) >= 2 else "numpy.core"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only _NUMPY_GLOBALS (reprod_log's files hold
    nothing else), so loading an untrusted .npy cannot run code."""

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            if module.startswith(("numpy.core.", "numpy._core.")):
                module = f"{_NUMPY_CORE}.{module.split('.', 2)[2]}"
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self._path}: refusing to unpickle global '{module}.{name}': a reprod_log "
            "file holds only numpy arrays")


def _load_npy_safely(path):
    """np.load(path, allow_pickle=True) for .npy files, with object arrays
    unpickled by _NumpyOnlyUnpickler."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file")
        f.seek(0)
        version = np.lib.format.read_magic(f)
        # Formats 2.0 and 3.0 share one layout; 3.0's header is UTF-8 (for
        # non-Latin-1 field names), which reading it as Latin-1 garbles in
        # field names only, never in whether the dtype holds objects. numpy
        # has no public reader for 3.0.
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0,
                       (3, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{path}: unsupported .npy format version {version}")
        shape, fortran, dtype = read_header(f)
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        array = _NumpyOnlyUnpickler(f, path).load()
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise ValueError(f"{path}: pickled payload does not match the .npy header "
                         f"(shape {tuple(shape)})")
    return array


class ReprodDiffHelper:
    """reprod_log.ReprodDiffHelper: loads two reprod_log files, computes
    per-key diffs and reports them in reprod_log's log format."""

    def load_info(self, path):
        """Loads a reprod_log .npy dict (what reprod_log's
        np.load(path, allow_pickle=True).tolist() returns), but unpickles
        only numpy arrays, dtypes and scalars: a file naming any other
        global (os.system, ...) raises pickle.UnpicklingError naming the file
        and the global, and nothing of it runs."""
        assert os.path.exists(path), f"{path} does not exist"
        return _load_npy_safely(path).tolist()

    def compare_info(self, info1, info2):
        """Computes the diff of two dicts (info1 the reference) into
        self.diff_dict."""
        assert isinstance(info1, dict) and isinstance(info2, dict)
        _check_data(info1, info2)
        self.diff_dict = _compute_diff(info1, info2)

    def report(self, diff_method='mean', diff_threshold=1e-6, path="./diff.txt"):
        """Logs the checks of self.diff_dict to stdout and path, ending with
        'diff check passed' or 'diff check failed'; sets self.passed and
        returns None."""
        logger, handlers = _report_logger(path)
        try:
            passed = _check_print_diff(
                self.diff_dict,
                diff_method=diff_method,
                diff_threshold=diff_threshold,
                print_func=logger.info)
            if passed:
                logger.info('diff check passed')
            else:
                logger.info('diff check failed')
            self.passed = passed
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                handler.close()
        return
