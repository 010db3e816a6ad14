"""Running an uploaded policy in a child process it cannot escape (docs/models.md, "The sandbox").

The worker never loads an uploaded file itself. :class:`SandboxPool` starts a child
(:mod:`actors.rl.sandbox.child`) with

* an empty environment (no ``RESIMHUB_*`` settings, no database URL, no secrets) and no inherited
  descriptor but one end of a Unix socket pair; the model file, opened read-only here, is passed
  over that socket when the child is put to use;
* an empty temporary working directory, removed afterwards, so that a relative path in a file
  reaches nothing;
* caps on its address space and CPU time, set by the child before it reads the upload;

and talks to it through :mod:`actors.rl.sandbox.wire` under wall-clock deadlines: one for loading,
one per batched ``act`` call and one for the whole evaluation. The environments stay in the worker,
so every return the hub reports is computed by the hub, never by the child; the child only maps an
observation batch to an action batch, and each answer is checked (dtype, shape, range) before it
reaches an environment. Evaluation batches observations across its environments, so the process
hop is paid once per lockstep, not once per environment step.

Whatever goes wrong ends as a :class:`SandboxError` with a stable code and the child killed; the
worker thread goes on to its next message.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.sandbox import wire

MiB = 1024 * 1024
#: How long a new child may take to import numpy, gymnasium and onnxruntime on a busy machine.
STARTUP_TIMEOUT_S = 120.0
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
#: Variables the child keeps: one thread per math library (the worker parallelises across
#: evaluations), and the OpenBLAS core type where the machine needs it for correct results.
_KEPT_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_THREADS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                # Without it onnxruntime keeps a device-id database under $HOME/.cache, open for writing.
                "ORT_DISABLE_TELEMETRY": "1"}


@dataclass(frozen=True)
class SandboxLimits:
    """What an uploaded policy may spend; settings ``RESIMHUB_SANDBOX_*`` (see the README)."""

    #: Address space of the child (RLIMIT_AS). numpy, onnxruntime and gymnasium need about 1 GiB of
    #: address space before any model is loaded; 2 GiB leaves room for any MLP a file may hold.
    memory_bytes: int = 2048 * MiB
    #: CPU seconds for the child's whole life (RLIMIT_CPU).
    cpu_seconds: int = 900
    #: Reading the file, building the network or onnxruntime session and the probe run.
    load_timeout_s: float = 60.0
    #: One batched forward pass (up to a few thousand observations).
    step_timeout_s: float = 10.0
    #: The whole evaluation, loading included.
    evaluation_timeout_s: float = 1800.0


class SandboxError(ModelFileError):
    """A sandboxed policy broke a limit, crashed, answered nonsense or was cancelled.

    Codes: ``policy_timeout``, ``policy_cpu_time``, ``policy_memory``, ``policy_crashed``,
    ``policy_output_invalid``, ``evaluation_cancelled``.
    """


class Cancelled(SandboxError):
    def __init__(self) -> None:
        super().__init__("evaluation_cancelled", "the evaluation was cancelled; its policy process was stopped")


def _child_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update(_THREADS_ENV)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class _Child:
    """One child process and its socket; :meth:`kill` is safe to call from any thread, any time."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.workdir = tempfile.mkdtemp(prefix="resimhub-sandbox-")
        os.chmod(self.workdir, 0o700)
        self.log = tempfile.TemporaryFile(prefix="resimhub-sandbox-", suffix=".log")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        bootstrap = (f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
                     "from actors.rl.sandbox.child import main; main()")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", bootstrap, str(theirs.fileno()), str(limits.memory_bytes),
                 str(limits.cpu_seconds)],
                cwd=self.workdir, env=_child_env(), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                pass_fds=(theirs.fileno(),), close_fds=True, start_new_session=True)
        except BaseException:
            ours.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.fd = ours.fileno()
        os.set_blocking(self.fd, False)
        self.reader = wire.Reader(self.fd, max_payload=256 * MiB)
        self._lock = threading.Lock()
        self.closed = False
        self.ready = False

    def wait_ready(self, cancelled: Callable[[], bool] | None = None) -> None:
        """Wait for the child's imports (not counted against the load deadline: they are ours)."""
        if self.ready:
            return
        answer, _ = _request(self, b"", time.monotonic() + STARTUP_TIMEOUT_S, cancelled)
        if not (answer or {}).get("ready"):
            raise SandboxError("policy_crashed", "the policy process did not start")
        self.ready = True

    def alive(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def attach(self, model_path: str | os.PathLike) -> None:
        """Hand the child the model file, opened read-only here; it never sees the path."""
        fd = os.open(model_path, os.O_RDONLY)
        try:
            socket.send_fds(self.sock, [b"F"], [fd])
        except OSError as exc:
            raise SandboxError("policy_crashed", f"the policy process could not be started ({exc})") from None
        finally:
            os.close(fd)

    def kill(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.sock.close()
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            self.log.seek(0, os.SEEK_END)
            size = self.log.tell()
            self.log.seek(max(0, size - n))
            return self.log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def death(self) -> SandboxError | None:
        """What the child's exit status says, once it has exited (``None`` while it runs)."""
        try:
            code = self.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return None
        if code == -signal.SIGXCPU:
            return SandboxError("policy_cpu_time", f"the policy used up its {self.limits.cpu_seconds} s of CPU time",
                                details={"cpu_seconds": self.limits.cpu_seconds})
        tail = self.stderr_tail()
        if "MemoryError" in tail or "bad_alloc" in tail or "Failed to allocate" in tail:
            return SandboxError("policy_memory", "the policy process ran out of its "
                                f"{self.limits.memory_bytes // MiB} MiB memory limit and died",
                                details={"memory_mb": self.limits.memory_bytes // MiB})
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return SandboxError("policy_crashed", f"the policy process died ({how})",
                            details={"exit": how, "memory_mb": self.limits.memory_bytes // MiB})


class SandboxedPolicy:
    """A :class:`~actors.rl.policy.Policy` whose ``act`` runs in the child.

    ``cancelled()`` is consulted while waiting for the child (about every 0.1 s) and before each
    request; when it returns true the child is killed and :class:`Cancelled` raised. Use as a
    context manager, or call :meth:`close`, so that the child never outlives its evaluation.
    """

    def __init__(self, child: _Child, describe: dict, cancelled: Callable[[], bool] | None,
                 deadline: float) -> None:
        self._child = child
        self._cancelled = cancelled
        self._deadline = deadline
        self.loaded: dict = describe.get("loaded") or {}
        self.kind = describe.get("kind")
        self.head: str = describe["head"]
        self.obs_shape = tuple(int(s) for s in describe["obs_shape"])
        self.n_inputs = int(describe["n_inputs"])
        self.n_outputs = int(describe["n_outputs"])
        #: Set for a network over one-hot Discrete states (the child encodes; the checks need to know).
        encoding = (self.loaded.get("policy") or {}).get("obs_encoding")
        self.one_hot = self.n_inputs if encoding == "one-hot" else None

    # -- the Policy protocol -------------------------------------------------------------------
    def act(self, obs_batch: np.ndarray) -> np.ndarray:
        x = np.asarray(obs_batch)
        if x.shape == self.obs_shape:
            x = x[None]
        n = int(x.shape[0])
        limits = self._child.limits
        _, out = _request(self._child, wire.encode_array(x),
                          min(time.monotonic() + limits.step_timeout_s, self._deadline), self._cancelled, step=True)
        return self._checked(out, n)

    def describe(self) -> dict:
        return dict((self.loaded.get("policy") or {}), sandboxed=True)

    def _checked(self, out: np.ndarray | None, n: int) -> np.ndarray:
        if out is None:
            raise self._bad("the policy answered without actions")
        if self.head == "discrete":
            if out.dtype.kind not in "iu" or out.shape != (n,):
                raise self._bad(f"the policy answered {out.dtype}{list(out.shape)} where {n} integer actions "
                                "were expected")
            acts = out.astype(np.int64)
            if n and (acts.min() < 0 or acts.max() >= self.n_outputs):
                raise self._bad(f"the policy answered an action outside 0..{self.n_outputs - 1}")
            return acts
        if out.dtype.kind != "f" or out.shape != (n, self.n_outputs):
            raise self._bad(f"the policy answered {out.dtype}{list(out.shape)} where ({n}, {self.n_outputs}) "
                            "float actions were expected")
        acts = out.astype(np.float64)
        if not np.all(np.isfinite(acts)):
            raise self._bad("the policy answered a NaN or infinite action")
        return acts

    def _bad(self, message: str) -> SandboxError:
        self.close()
        return SandboxError("policy_output_invalid", message)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        child = self._child
        if child.closed:
            return
        try:
            wire.write_all(child.fd, wire.encode_json({"op": "exit"}), time.monotonic() + 0.2)
        except (wire.WireError, OSError):
            pass
        child.kill()

    def __enter__(self) -> SandboxedPolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close must not leave a process behind
        try:
            self._child.kill()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def _request(child: _Child, frame: bytes, deadline: float, cancelled: Callable[[], bool] | None,
             step: bool = False) -> tuple[dict | None, np.ndarray | None]:
    """One request and its answer; on any failure the child is killed and a SandboxError raised."""

    def poll() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled()

    try:
        poll()
        if frame:
            wire.write_all(child.fd, frame, deadline)
        answer, out = child.reader.read(deadline, poll)
    except Cancelled:
        child.kill()
        raise
    except wire.WireError as exc:
        error = _failure(child, exc, step)
        child.kill()
        raise error from None
    except OSError as exc:  # EBADF after a kill from another thread, EIO…
        child.kill()
        raise SandboxError("policy_crashed", f"the policy process went away ({exc})") from None
    if answer is not None and not answer.get("ok"):
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        child.kill()
        code = error.get("code")
        code = code if isinstance(code, str) and _CODE_RE.match(code) else "policy_error"
        status = error.get("status") if isinstance(error.get("status"), int) and 400 <= error["status"] < 500 else None
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
        raise SandboxError(code, str(error.get("message") or "the policy failed")[:2000], status=status,
                           details=details)
    return answer, out


def _failure(child: _Child, exc: wire.WireError, step: bool) -> SandboxError:
    if exc.kind == "timeout":
        death = child.death() if child.proc.poll() is not None else None
        if death is not None:
            return death
        what = "one forward pass" if step else "loading the model"
        limit = child.limits.step_timeout_s if step else child.limits.load_timeout_s
        return SandboxError("policy_timeout", f"the policy took longer than its deadline for {what} "
                            f"({limit:g} s, or the evaluation's {child.limits.evaluation_timeout_s:g} s)",
                            details={"limit_s": limit, "evaluation_limit_s": child.limits.evaluation_timeout_s})
    if exc.kind == "closed":
        death = child.death()
        if death is not None:
            return death
    return SandboxError("policy_crashed", f"the policy process broke the protocol: {exc}")


class SandboxPool:
    """Starts children one ahead of need, so that an evaluation does not wait for the imports.

    One idle child is kept ready per pool (a worker process has one pool, owned by its runtime).
    An idle child holds nothing: no model, no settings, no secrets; it is given a model only when
    taken, and a used child is never reused (it has run an upload's code).
    """

    def __init__(self, limits: SandboxLimits | None = None, spare: bool = True) -> None:
        self.limits = limits or SandboxLimits()
        self.spare = spare
        self._lock = threading.Lock()
        self._idle: _Child | None = None
        self._closed = False

    def _take(self) -> _Child:
        with self._lock:
            child, self._idle = self._idle, None
            if self.spare and not self._closed:
                self._idle = _Child(self.limits)
        if child is not None and child.alive():
            return child
        if child is not None:
            child.kill()
        return _Child(self.limits)

    def open(self, path: str | os.PathLike, *, cancelled: Callable[[], bool] | None = None,
             **load_kwargs: Any) -> SandboxedPolicy:
        """Load ``path`` in a child with :func:`~actors.rl.modelfiles.load_policy` and
        ``load_kwargs`` (JSON-safe values only) and return the policy proxy.

        A file the loader refuses raises a :class:`SandboxError` carrying the loader's own code
        and status, exactly as an in-process load would have refused it.
        """
        child = self._take()
        try:
            child.wait_ready(cancelled)
            start = time.monotonic()
            child.attach(path)
            deadline = start + self.limits.evaluation_timeout_s
            answer, _ = _request(child, wire.encode_json({"op": "load", "kwargs": load_kwargs}),
                                 min(start + self.limits.load_timeout_s, deadline), cancelled)
            describe = (answer or {}).get("describe")
            try:
                if not isinstance(describe, dict) or describe.get("head") not in ("discrete", "box"):
                    raise ValueError(describe)
                return SandboxedPolicy(child, describe, cancelled, deadline)
            except (KeyError, TypeError, ValueError):
                raise SandboxError("policy_crashed", "the policy process described its model in an unknown "
                                   "way") from None
        except BaseException:
            child.kill()
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            child, self._idle = self._idle, None
        if child is not None:
            child.kill()


def open_policy(path: str | os.PathLike, *, limits: SandboxLimits | None = None,
                cancelled: Callable[[], bool] | None = None, **load_kwargs: Any) -> SandboxedPolicy:
    """A one-off sandbox (no spare child kept): see :meth:`SandboxPool.open`."""
    return SandboxPool(limits, spare=False).open(path, cancelled=cancelled, **load_kwargs)
