"""Host memory: glibc's malloc with transparent huge pages, for the CLI and the benchmark scripts.

XLA:CPU allocates its buffers with ``malloc``; glibc serves large requests with fresh ``mmap`` regions and returns
them on ``free``, so every step of a jitted training loop touches its activations' memory again page by page. On this
project's 2-core machine an evaluation epoch of 100 images took 56 800 minor page faults (~230 MB of 4 KiB pages
zeroed by the kernel), every epoch. With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35) malloc asks the
kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``): 808 faults and 0.287 instead of 0.385 s per epoch
(experiments/bench/bench_page_faults.py, experiments/bench/PROFILE.md finding 13). The trained weights are bit-identical.

glibc reads its tunables once, at process start, so a running interpreter cannot switch; ``reexec_with_hugepages``
restarts the process with the tunable set. The ``jaxdd`` command and the benchmark scripts call it first thing; in a
notebook, start Jupyter with the variable set. ``JAXDD_HUGEPAGES=0`` turns it off.

It is a CPU measure: on a GPU or TPU the big buffers live in device memory (XLA's own allocator), so the restart is
skipped where JAX's backend will be an accelerator. That is decided WITHOUT initialising a backend (a restart after
it would pay the device start-up twice, and importing jax is not needed either), by ``accelerator_expected``:

1. ``JAX_PLATFORMS`` set (e.g. ``cuda``, ``tpu``, ``cpu``, ``cuda,cpu``): its first platform decides (``cpu``: CPU);
2. otherwise: a PJRT plugin is installed (a ``jax_plugins`` entry point or module, e.g. ``jax-cuda13-plugin``'s
   ``xla_cuda13``, or ``libtpu``) AND the machine has the matching device node (``/dev/nvidia*`` for CUDA,
   ``/dev/kfd`` for ROCm, ``/dev/accel*`` or ``/dev/vfio`` for TPU). A plugin on a machine without its device falls
   back to CPU in JAX, and is treated as CPU here.

The check errs towards "CPU": a wrong guess costs only the restart (a few hundred ms before any work), never a result.
"""
from __future__ import annotations

import glob
import importlib.util
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


def _installed_plugins() -> list[str]:
    """Names of the installed JAX PJRT plugins, found as jax finds them (``jax_plugins`` entry points and modules,
    plus ``libtpu``), without importing jax or any plugin."""
    names: list[str] = []
    try:
        from importlib.metadata import entry_points

        names += [ep.name for ep in entry_points(group="jax_plugins")]
    except Exception:  # pragma: no cover  (broken metadata must not stop the program)
        pass
    try:
        spec = importlib.util.find_spec("jax_plugins")
        for path in (spec.submodule_search_locations or []) if spec else []:
            names += [p.name for p in Path(path).iterdir() if not p.name.startswith(("_", "."))]
    except Exception:  # pragma: no cover
        pass
    try:
        if importlib.util.find_spec("libtpu") is not None:
            names.append("libtpu")
    except Exception:  # pragma: no cover
        pass
    return names


_DEVICE_NODES = {"cuda": ("/dev/nvidia[0-9]*",), "rocm": ("/dev/kfd",), "tpu": ("/dev/accel*", "/dev/vfio/*")}


def accelerator_expected(environ=None, plugins=None, device_nodes=None) -> bool:
    """Whether JAX's default backend will be an accelerator, decided without initialising one (module docstring).

    ``environ``, ``plugins`` (plugin names) and ``device_nodes`` (glob -> present?) override what is read from this
    process and machine (for tests)."""
    env = os.environ if environ is None else environ
    platforms = env.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() != "cpu"
    names = [n.lower() for n in (_installed_plugins() if plugins is None else plugins)]
    present = device_nodes if device_nodes is not None else None
    for kind, patterns in _DEVICE_NODES.items():
        if not any(kind in n for n in names):
            continue
        for pattern in patterns:
            found = present.get(pattern, False) if present is not None else bool(glob.glob(pattern))
            if found:
                return True
    return False


def reexec_with_hugepages() -> None:
    """Replace this process with the same command line plus ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` where that is
    supported and not already set (other tunables are kept). Call it before any work: nothing after it runs twice,
    but everything before it does. No-op where unsupported, when already set, with ``JAXDD_HUGEPAGES=0``, and where
    JAX will run on an accelerator (``accelerator_expected``: the measure is for XLA:CPU's host buffers)."""
    if os.environ.get("JAXDD_HUGEPAGES", "1") == "0" or hugepages_active() or not hugepages_supported():
        return
    if accelerator_expected():
        return
    tunables = ":".join(t for t in (os.environ.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
