"""The sandbox child: loads one uploaded model and answers ``act`` requests, nothing else.

It is started by :mod:`actors.rl.sandbox.process` with an empty environment, an empty working
directory and no inherited descriptor but one end of a Unix socket pair. It caps its own address
space, CPU time and core dumps first (here rather than in a ``preexec_fn``, which can deadlock in
a threaded worker), imports the loader, and then waits: a child is started ahead of need, so an
evaluation does not pay for the imports. When it is put to use, the parent passes the model file,
opened read-only, over the socket (``SCM_RIGHTS``); the child reads it, closes it and from then on
only maps observation batches to actions.

Frames are those of :mod:`actors.rl.sandbox.wire`. Requests: ``{"op": "load", "kwargs": {…}}``
(answered ``{"ok": true, "describe": …}``), an observation batch (answered with the action batch)
and ``{"op": "exit"}``. A failure is answered ``{"ok": false, "error": {"code", "message",
"details", "status"}}``.
"""

from __future__ import annotations

import os
import resource
import sys
import traceback


def _cap(kind: int, soft: int, hard: int) -> None:
    # Lowering a limit is always allowed; an existing lower hard limit stays.
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def _set_limits(memory_bytes: int, cpu_seconds: int) -> None:
    _cap(resource.RLIMIT_CORE, 0, 0)
    if memory_bytes > 0:
        _cap(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    if cpu_seconds > 0:
        # The soft limit sends SIGXCPU, which ends the process (the parent reports policy_cpu_time);
        # the hard limit, a little later, is SIGKILL for a child that ignores it.
        _cap(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 5)


def _memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("bad_alloc", "failed to allocate", "cannot allocate", "out of memory"))


def _error(exc: BaseException) -> dict:
    from actors.rl.errors import RLError

    if _memory_error(exc):
        return {"code": "policy_memory", "message": "the policy ran out of the sandbox's memory limit "
                f"({type(exc).__name__}: {str(exc)[:200]})", "details": {}, "status": 422}
    if isinstance(exc, RLError):
        body = exc.to_dict()
        return {"code": body["code"], "message": body["message"], "details": body.get("details") or {},
                "status": getattr(exc, "status", 422)}
    return {"code": "policy_error", "message": f"the policy failed: {type(exc).__name__}: {str(exc)[:300]}",
            "details": {}, "status": 422}


def _describe(loaded) -> dict:
    from actors.rl.policy import _json_safe

    policy = loaded.policy
    return _json_safe({"loaded": loaded.to_dict(), "head": policy.head, "kind": getattr(policy, "kind", None),
                   "obs_shape": list(policy.obs_shape), "n_inputs": int(policy.n_inputs),
                   "n_outputs": int(policy.n_outputs)})


def serve(sock_fd: int, model_fd: int) -> None:
    import numpy as np

    from actors.rl.sandbox import wire

    reader = wire.Reader(sock_fd, max_payload=1 << 30)
    policy = None
    while True:
        try:
            message, batch = reader.read()
        except wire.WireError:
            return  # the parent went away or spoke nonsense: nothing left to serve
        try:
            if batch is not None and policy is not None:
                frame = wire.encode_array(np.asarray(policy.act(batch)))
            elif message is not None and message.get("op") == "exit":
                return
            elif message is not None and message.get("op") == "load" and policy is None:
                from actors.rl.modelfiles import load_policy

                loaded = load_policy(f"/proc/self/fd/{model_fd}", **(message.get("kwargs") or {}))
                os.close(model_fd)  # the upload is in memory now; nothing else is readable from here
                policy = loaded.policy
                frame = wire.encode_json({"ok": True, "describe": _describe(loaded)})
            else:
                frame = wire.encode_json({"ok": False, "error": {"code": "protocol", "details": {}, "status": 422,
                                                                 "message": "unexpected request"}})
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, the parent decides
            traceback.print_exc()  # to this child's log file, never to the socket
            frame = wire.encode_json({"ok": False, "error": _error(exc)})
        try:
            wire.write_all(sock_fd, frame)
        except (wire.WireError, OSError):
            return


def main() -> None:
    sock_fd, memory_bytes, cpu_seconds = (int(v) for v in sys.argv[1:4])
    _set_limits(memory_bytes, cpu_seconds)
    # Libraries that print to stdout must not corrupt anything: fd 1 goes where stderr goes.
    os.dup2(2, 1)
    import socket

    import numpy  # noqa: F401 - imported while waiting, so that a load does not pay for it
    import onnx  # noqa: F401 - about a second to import; the ONNX checks need it
    import onnxruntime  # noqa: F401

    import actors.rl.envspec  # noqa: F401
    import actors.rl.modelfiles  # noqa: F401
    from actors.rl.sandbox import wire

    sock = socket.socket(fileno=sock_fd)
    try:
        wire.write_all(sock_fd, wire.encode_json({"ok": True, "ready": True}))
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    except (OSError, wire.WireError):
        fds = []
    try:
        if len(fds) == 1:
            sock.detach()
            serve(sock_fd, fds[0])
    finally:
        _remove_workdir()


def _remove_workdir() -> None:
    # The parent removes this empty directory when it ends the child; when the parent itself died
    # (kill -9 of a worker), nobody else will.
    try:
        os.rmdir(os.getcwd())
    except OSError:
        pass


if __name__ == "__main__":
    main()
