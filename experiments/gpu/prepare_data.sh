#!/usr/bin/env bash
# Copies the Fashion-MNIST IDX files into .data/fashion_mnist/ of this checkout (ignored by git), so that a device
# command can carry them (run(..., carry=[".data"])) and the kit reads them with --data-dir .data.
#   bash experiments/gpu/prepare_data.sh [SOURCE_DIR [DEST]]
# SOURCE_DIR defaults to Debian's /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist), DEST to
# .data (the files land in DEST/fashion_mnist/, where jaxdd.data.load("fashion_mnist", data_dir=DEST) finds them).
# The four files are gzipped, 30 MiB together, within the 64 MiB a device command carries.
set -euo pipefail
cd "$(dirname "$0")/../.."
src="${1:-/usr/share/datasets/fashion-mnist}"
dst="${2:-.data}/fashion_mnist"
mkdir -p "$dst"
n=0
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  for f in "$src/$stem" "$src/$stem.gz"; do
    if [ -f "$f" ]; then cp -f "$f" "$dst/"; n=$((n + 1)); break; fi
  done
done
if [ "$n" -ne 4 ]; then
  echo "prepare_data: found $n of the 4 IDX files in $src (apt-get install dataset-fashion-mnist, or pass a directory)" >&2
  exit 1
fi
du -sh "$dst"
