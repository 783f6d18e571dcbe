"""Markdown of a stage's record (STAGE.md), and the results table of docs/gpu.md from several stages' JSON.

    python3 -m experiments.gpu.tables experiments/gpu/results        # prints the per-method table for docs/gpu.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def _acc(r):
    if "accuracy_mean" not in r:
        return "-"
    return f"{100 * r['accuracy_mean']:.1f} +- {100 * r['accuracy_std']:.1f}"


def _device(rec) -> str:
    envs = {f"{c['environment']['device_kind']} ({c['environment']['backend']}, jax {c['environment']['jax']})"
            for c in rec.get("calls", []) if "environment" in c}
    return "; ".join(sorted(envs)) or "?"


def markdown(rec: dict) -> str:
    cells = rec.get("cells", {})
    lines = [f"# experiments/gpu stage `{rec['stage']}`{' (smoke)' if rec.get('smoke') else ''}", "",
             f"Device: {_device(rec)}.", ""]
    distill = {k: v for k, v in cells.items() if "method" in v and not k.startswith("timing_")}
    if distill:
        lines += ["| cell | method | IPC | iterations (cap) | distill s | evaluation | accuracy (%) | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in distill.items():
            it = "-" if "iterations" not in r else f"{r['iterations']} ({r.get('cap', '-')})"
            if "paper_iterations" in r:
                it += f" = {r['paper_iterations']:g} paper it."
            ev = r.get("eval", {})
            evs = f"{ev.get('networks', '-')} nets x {ev.get('epochs', '-')} ep" + (", DSA" if ev.get("augment") else "")
            lines.append(f"| {name} | {r['method']} | {r['ipc']} | {it} | {_f(r.get('seconds_distill'), '{:.0f}')} | "
                         f"{evs} | {_acc(r)} | {r.get('status')} |")
        lines.append("")
    timing = {k: v for k, v in cells.items() if k.startswith("timing_") and not k.startswith("timing_mtt_")}
    if timing:
        lines += ["| timing | seconds per iteration | first call s | note |", "|---|---|---|---|"]
        for name, r in timing.items():
            if name == "timing_eval" and "vmapped_seconds" in r:
                lines.append(f"| evaluation, {r['networks']} networks x {r['epochs']} epochs, DSA, {r['set_size']} "
                             f"images | vmapped {r['vmapped_seconds']:.1f} s; one at a time "
                             f"{r['one_at_a_time_seconds_all']:.1f} s ({r['one_at_a_time_seconds_per_network']:.2f} "
                             f"s per network, {r['one_at_a_time_measured']} measured) | - | speed-up "
                             f"{r['speedup']:.1f}x |")
            elif name == "timing_multi" and "speedup" in r:
                lines.append(f"| {r['experiments']} DM experiments (IPC {r['ipc']}) | vmapped "
                             f"{r['vmapped_seconds_per_iteration']:.3f}; one experiment "
                             f"{r['single_seconds_per_iteration']:.3f} | - | speed-up {r['speedup']:.1f}x over "
                             f"{r['experiments']} sequential runs |")
            elif "seconds_per_step" in r:
                note = (f"{r['steps_timed']} rounds = 1 paper iteration" if r["method"] != "dm" else
                        f"{r['steps_timed']} iterations timed") + f", conv_impl {r.get('conv_impl')}"
                lines.append(f"| {r['method']} IPC {r['ipc']} | {r['seconds_per_paper_iteration']:.3f} | "
                             f"{r['first_call_seconds']:.1f} | {note} |")
            else:
                lines.append(f"| {name} | - | - | {r.get('status')}: {r.get('error', '')[:80]} |")
        lines.append("")
    mtt = {k: v for k, v in cells.items() if k.startswith("timing_mtt_")}
    if mtt:
        lines += ["| MTT meta-step | unrolled steps | s / meta-step | XLA buffers (MiB) | device peak so far (MiB) | "
                  "compile s |", "|---|---|---|---|---|---|"]
        for name, r in sorted(mtt.items(), key=lambda kv: (kv[1].get("memory", ""), kv[1].get("syn_steps", 0))):
            if "seconds_per_meta_step" not in r:
                lines.append(f"| {name} | | | | | {r.get('status')} |")
                continue
            lines.append(f"| {r['memory']} | {r['syn_steps']} | {r['seconds_per_meta_step']:.3f} | "
                         f"{_f(r.get('xla_mib'), '{:.0f}')} | {_f(r.get('device_peak_mib_so_far'), '{:.0f}')} | "
                         f"{r['compile_s']:.1f} |")
        lines.append("")
    other = {k: v for k, v in cells.items() if k not in distill and k not in timing and k not in mtt}
    for name, r in other.items():
        if name == "determinism":
            for variant, d in r.items():
                if isinstance(d, dict) and "identical" in d:
                    lines.append(f"- determinism, {variant} (XLA_FLAGS `{d['xla_flags']}`): two fresh runs "
                                 f"{'bit-identical' if d['identical'] else 'DIFFER'} ({d['parts_identical']}).")
        elif "summary" in r or "rc" in r:
            lines.append(f"- {name}: `{r.get('command', '')}` -> rc {r.get('rc')}"
                         f"{': ' + r['summary'] if r.get('summary') else ''} ({_f(r.get('seconds', r.get('wall_s')), '{:.0f}')} s)")
        else:
            lines.append(f"- {name}: {r.get('status')} {r.get('error', '')}")
    pending = {}
    for c in rec.get("calls", [])[-1:]:
        pending.update(c.get("pending", {}))
    if pending:
        lines += ["", "Pending (budget): " + ", ".join(sorted(pending))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    directory = Path((argv or sys.argv[1:] or ["experiments/gpu/results"])[0])
    for f in sorted(directory.glob("*.json")):
        rec = json.loads(f.read_text())
        if "stage" in rec:
            print(markdown(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
