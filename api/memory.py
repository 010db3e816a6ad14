"""Keeping a long-running gateway's memory at its working set.

Analytics reads allocate and free tens of megabytes through Arrow and pandas from several threads.
Measured over a growing snapshot folder (docs/benchmarks.md, "Load"), Arrow's default pool (mimalloc)
and glibc's per-thread arenas kept what was freed, so the gateway's RSS climbed with every burst of
reads although nothing stayed referenced. Arrow's system pool, two glibc arenas and handing freed
pages back after each read keep it flat. An operator's own ``ARROW_DEFAULT_MEMORY_POOL`` or
``MALLOC_ARENA_MAX`` wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

import pyarrow as pa

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
GATEWAY_ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_libc = _glibc()


def tune_gateway_process() -> None:
    """Call once at gateway start, before serving."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    if _libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        _libc.mallopt(_M_ARENA_MAX, GATEWAY_ARENAS)
    log.debug("arrow memory pool: %s", pa.default_memory_pool().backend_name)


def release_unused() -> None:
    """Return freed memory to the operating system (Arrow's pool, then the C heap)."""
    pa.default_memory_pool().release_unused()
    if _libc is not None:
        _libc.malloc_trim(0)
