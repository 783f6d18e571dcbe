import os
import subprocess
import sys

import pytest

from jaxdd.hostmem import TUNABLE, hugepages_supported

SHOW = ("import os; from jaxdd.hostmem import reexec_with_hugepages; print(os.getpid(), os.environ.get('GLIBC_TUNABLES'),"
        " flush=True); reexec_with_hugepages()")


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXDD_HUGEPAGES")}
    out = subprocess.run([sys.executable, "-c", SHOW], env={**env, **env_extra}, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split("\n")
    return [line.split(" ", 1) for line in out if line]


@pytest.mark.skipif(not hugepages_supported(), reason="needs Linux, glibc >= 2.35 and transparent huge pages")
def test_reexec_sets_the_tunable_once_keeps_others_and_can_be_turned_off():
    first, second = _run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})  # the same process, restarted once
    assert first[0] == second[0]
    assert first[1] == "glibc.malloc.arena_max=4" and second[1] == "glibc.malloc.arena_max=4:" + TUNABLE
    (off,) = _run({"JAXDD_HUGEPAGES": "0"})  # turned off: no restart, nothing set
    assert off[1] == "None"
    (only,) = _run({"GLIBC_TUNABLES": TUNABLE})  # already set: no restart
    assert only[1] == TUNABLE


@pytest.mark.skipif(not hugepages_supported(), reason="needs Linux, glibc >= 2.35 and transparent huge pages")
def test_no_reexec_when_jax_will_run_on_an_accelerator():
    (gpu,) = _run({"JAX_PLATFORMS": "cuda"})  # an accelerator backend: the CPU measure stays off, no restart
    assert gpu[1] == "None"
    first, second = _run({"JAX_PLATFORMS": "cpu,cuda"})  # CPU first: restarted once
    assert first[0] == second[0] and second[1] == TUNABLE


def test_accelerator_expected_reads_platforms_then_plugins_and_device_nodes():
    from jaxdd.hostmem import accelerator_expected

    none = {"/dev/nvidia[0-9]*": False}
    assert accelerator_expected({"JAX_PLATFORMS": "cuda"}, [], none)
    assert accelerator_expected({"JAX_PLATFORMS": "tpu,cpu"}, [], none)
    assert not accelerator_expected({"JAX_PLATFORMS": "cpu"}, ["xla_cuda13"], {"/dev/nvidia[0-9]*": True})
    assert not accelerator_expected({}, [], {"/dev/nvidia[0-9]*": True})  # a device but no plugin: jax runs on CPU
    assert not accelerator_expected({}, ["xla_cuda13"], none)  # a plugin without its device falls back to CPU
    assert accelerator_expected({}, ["xla_cuda13"], {"/dev/nvidia[0-9]*": True})
    assert accelerator_expected({}, ["libtpu"], {"/dev/accel*": True})
    assert not accelerator_expected({}, ["libtpu"], {"/dev/nvidia[0-9]*": True})
    # this machine, as it is: the suite runs on CPU
    import jax

    assert accelerator_expected() == (jax.default_backend() != "cpu")
