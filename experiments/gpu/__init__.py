"""The GPU kit: jaxdd's accelerator runs as stages of one device command each (docs/gpu.md has the commands).

    bash experiments/gpu/prepare_data.sh                    # once, here: Fashion-MNIST IDX files -> .data/ (ignored)
    python3 -m experiments.gpu check  --out $OUT/check  --data-dir .data
    python3 -m experiments.gpu dm     --out $OUT/dm     --data-dir .data [--cells dm_ipc1,random_ipc1]
    python3 -m experiments.gpu mtt    --out $OUT/mtt    --data-dir .data
    python3 -m experiments.gpu dc     --out $OUT/dc     --data-dir .data
    python3 -m experiments.gpu theory --out $OUT/theory -- --only DR --index 0
    python3 -m experiments.gpu STAGE --out DIR --smoke      # CPU, seconds: what CI runs (tests/test_gpu_kit.py)

Each stage is a list of cells (one method at one IPC, one timing, ...). A stage writes ``DIR/STAGE.json`` (every
cell's record, the device, jax's version, the budgets) and ``DIR/STAGE.md`` (its table). It is resumable: cells
recorded as done in ``--resume FILE`` (default: ``experiments/gpu/results/STAGE.json`` when it exists, else
``DIR/STAGE.json``) are kept and not run again. A time guard (``--budget-s``, default 450 s of the 600 s a device
command may take) stops starting cells whose minimum need no longer fits, and records them as pending, so the JSON
is always written before the command is killed. Work files (checkpoints, expert trajectories) go to ``--work``
(default /tmp/jaxdd-gpu), never under ``--out``: a device command brings back at most 8 files.
"""
