"""Experiment studies: one module per study, each a grid of cells (in the style of big_vision's configs + sweeps).

A study module has a docstring that states the command, the expected runtime on the 2-core CPU and the paper number it
aims at, and defines

    sweep() -> list[dict]        every cell of the study's grid (seeds are a dimension of the grid), each a config:
        name, method, dataset, ipc, iterations, seed, [model, param, param_options, init, method_options,
        config_overrides, zca], eval: {models, epochs, augment}, [baseline], [tiny: {...}], [experts: {...}]
    report() -> str              (optional) the study's markdown tables from its results

and optionally ``run_cell(cfg, tiny, out_dir) -> dict`` when its cells are not plain distill-then-evaluate runs.
``python experiments/run.py STUDY [CELL ...]`` runs cells and writes ``experiments/results/STUDY/CELL.json``;
``python experiments/report.py [STUDY]`` prints the tables.
"""
from __future__ import annotations

import importlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
STUDIES = ("baselines", "lowrank", "mim", "continual")  # run by experiments/run.py
# sre2l_dwa has its own runner (teacher, soft-label evaluation): python experiments/studies/sre2l_dwa.py


def load(study: str):
    if study not in STUDIES:
        raise SystemExit(f"no study {study!r}; run.py runs: {', '.join(STUDIES)} "
                         "(SRe2L/DWA: python experiments/studies/sre2l_dwa.py)")
    return importlib.import_module(f"studies.{study}")


def cells(study: str) -> dict[str, dict]:
    """name -> config of every cell of a study, in grid order."""
    out = {}
    for cfg in load(study).sweep():
        if cfg["name"] in out:
            raise ValueError(f"study {study}: two cells are named {cfg['name']!r}")
        out[cfg["name"]] = cfg
    return out


def results_dir(study: str) -> Path:
    return RESULTS / study
