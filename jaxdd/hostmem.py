"""Host memory: glibc's malloc with transparent huge pages, for the CLI and the benchmark scripts.

XLA:CPU allocates its buffers with ``malloc``; glibc serves large requests with fresh ``mmap`` regions and returns
them on ``free``, so every step of a jitted training loop touches its activations' memory again page by page. On this
project's 2-core machine an evaluation epoch of 100 images took 56 800 minor page faults (~230 MB of 4 KiB pages
zeroed by the kernel), every epoch. With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35) malloc asks the
kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``): 808 faults and 0.287 instead of 0.385 s per epoch
(experiments/bench_page_faults.py, PROFILE.md finding 13). The trained weights are bit-identical.

glibc reads its tunables once, at process start, so a running interpreter cannot switch; ``reexec_with_hugepages``
restarts the process with the tunable set. The ``jaxdd`` command and the benchmark scripts call it first thing; in a
notebook, start Jupyter with the variable set. ``JAXDD_HUGEPAGES=0`` turns it off.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def hugepages_supported() -> bool:
    """Linux with glibc >= 2.35 and transparent huge pages not disabled (``[madvise]`` or ``[always]``)."""
    if not sys.platform.startswith("linux"):
        return False
    lib, version = platform.libc_ver()
    try:
        if lib != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            return False
        return "[never]" not in _THP.read_text()
    except (OSError, ValueError):
        return False


def hugepages_active() -> bool:
    """Whether this process started with the tunable set."""
    return "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", "")


def reexec_with_hugepages() -> None:
    """Replace this process with the same command line plus ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` where that is
    supported and not already set (other tunables are kept). Call it before any work: nothing after it runs twice,
    but everything before it does. No-op where unsupported, when already set, or with ``JAXDD_HUGEPAGES=0``."""
    if os.environ.get("JAXDD_HUGEPAGES", "1") == "0" or hugepages_active() or not hugepages_supported():
        return
    tunables = ":".join(t for t in (os.environ.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
