"""Files and run directories.

- ``atomic_write``: files that are never seen half-written (a sibling temporary file, fsync, rename into place);
- ``prepare_out_dir``: an output directory that exists and is writable, or a clear error;
- ``resume_run``: a run directory's ``run.json`` (the resolved configuration a run was created with), checked
  field by field when a command is rerun on the same directory, so that resuming never mixes two runs.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from jaxdd.types import JaxddError


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` so that a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    return obj


RUN_JSON = "run.json"


def prepare_out_dir(out_dir: str | os.PathLike, what: str = "--out") -> Path:
    """Create ``out_dir`` (and parents) and check it is a writable directory; a ``JaxddError`` otherwise."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise JaxddError(f"{what} {out} is an existing file, not a directory: give a directory path for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".jaxdd_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise JaxddError(f"cannot write the run directory {what} {out}: {e.strerror or e}; choose a writable "
                         "location") from None
    return out


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def _show(v: Any) -> str:
    return "(absent)" if v is _ABSENT else json.dumps(v)


_ABSENT = object()


def config_differences(old: dict, new: dict, extendable: Sequence[str] = ()) -> tuple[list, list]:
    """(refused, extended): lists of (field, old, new) between two configurations (nested dicts compared per dotted
    field). A field in ``extendable`` whose new value is a larger number is an extension; anything else that
    differs is refused."""
    a, b = _flatten(old), _flatten(new)
    refused, extended = [], []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, _ABSENT), b.get(k, _ABSENT)
        if va == vb:
            continue
        if (k in extendable and isinstance(va, (int, float)) and isinstance(vb, (int, float))
                and not isinstance(va, bool) and vb > va):
            extended.append((k, va, vb))
        else:
            refused.append((k, va, vb))
    return refused, extended


def _holds(p: Path) -> bool:
    """Whether ``p`` holds work: a file, or a directory with something in it."""
    return p.is_file() or (p.is_dir() and any(p.iterdir()))


def resume_run(out_dir: str | os.PathLike, kind: str, config: dict, *, extendable: Sequence[str] = (),
               legacy: dict | None = None, markers: Sequence[str] = ("checkpoints",),
               log=lambda s: print(s, file=sys.stderr, flush=True)) -> list:
    """Create the run directory ``out_dir`` of a ``jaxdd <kind>`` run, or check that a rerun matches it.

    A new directory gets ``run.json`` ({"kind", "config"}: the resolved configuration, written atomically). An
    existing one is compared field by field with ``config``: a larger value of a field in ``extendable`` (e.g.
    ``iterations``) extends the run (said in one line; run.json is updated), any other difference raises a
    ``JaxddError`` listing every differing field (old -> new) and how to start a fresh run. A directory without
    run.json that already holds one of ``markers`` (a run of an older jaxdd) is compared with ``legacy`` when given
    (the configuration it recorded elsewhere), and refused otherwise. While none of ``markers`` holds anything (no
    checkpoint or result yet: e.g. the first attempt failed on a bad option), run.json is simply rewritten. Returns
    the extensions [(field, old, new)].
    """
    out = prepare_out_dir(out_dir)
    new = json.loads(json.dumps(_jsonable(config)))
    path = out / RUN_JSON
    has_work = any(_holds(out / m) for m in markers)
    if path.exists() and has_work:
        try:
            saved = json.loads(path.read_text())
            old_kind, old = saved["kind"], saved["config"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise JaxddError(f"{path} is unreadable ({_first_line(e)}): cannot check what run {out} holds; use "
                             "another output directory") from None
        if old_kind != kind:
            raise JaxddError(f"{out} holds a `jaxdd {old_kind}` run, not a `jaxdd {kind}` one: use another output "
                             "directory")
    elif legacy is not None and has_work:
        old = json.loads(json.dumps(_jsonable(legacy)))
    elif has_work:
        raise JaxddError(f"{out} holds a run without {RUN_JSON} (made by an older jaxdd), so it cannot be checked "
                         "against this command: use another output directory (or delete this one) to start afresh")
    else:
        atomic_write(path, json.dumps({"kind": kind, "config": new}, indent=2, sort_keys=True) + "\n")
        return []
    refused, extended = config_differences(old, new, extendable)
    if refused:
        lines = "\n".join(f"  {k}: {_show(a)} -> {_show(b)}" for k, a, b in refused)
        ext = f" (only a larger {' / '.join(extendable)} extends it)" if extendable else ""
        raise JaxddError(f"{out} holds a `jaxdd {kind}` run made with other settings; resuming would mix two "
                         f"runs{ext}. Differing fields (saved -> this command):\n{lines}\nRerun with the saved "
                         f"settings to resume it, or start a fresh run with another output directory (or delete "
                         f"{out}).")
    if extended or not path.exists():
        atomic_write(path, json.dumps({"kind": kind, "config": new}, indent=2, sort_keys=True) + "\n")
    if extended:
        log(f"jaxdd: extending the run in {out}: " + ", ".join(f"{k} {a} -> {b}" for k, a, b in extended))
    return extended
