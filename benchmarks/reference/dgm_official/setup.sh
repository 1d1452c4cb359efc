#!/bin/bash
# Sets up the official DGM code (SAP/machine-learning-dgm at 3a4f429) for timing on a CPU, under DGM_BASE
# (default /tmp/ref/dgm): its own venv (torch pinned as ours), the code exported from a clone, and the two
# torch-1.0 -> 2.x fixes below (same buffers, shapes and arithmetic). Needs REPO=<a clone of the official repo>.
set -euo pipefail
BASE=${DGM_BASE:-/tmp/ref/dgm}; REPO=${REPO:?REPO=<clone of SAP/machine-learning-dgm>}
mkdir -p "$BASE/code"
git -C "$REPO" archive 3a4f429 | tar -x -C "$BASE/code"
python3.11 -m venv "$BASE/venv"
"$BASE/venv/bin/pip" install -q torch==2.13.0 "numpy==2.3.*" scikit-learn scipy pyyaml easydict pillow matplotlib tqdm
cd "$BASE/code"
# torch 1.0 resized a tensor through `.data.resize_`; torch 2.x does not (the code allocates 64x3x32x32 buffers)
sed -i 's/\.data\.resize_(/.resize_(/g' approaches/DGMw.py approaches/DGMa.py
# a private torch API gained a required argument; output_size is always None here, so it returns 0 as before
sed -i 's/self\._output_padding(inputx, output_size, self\.stride, self\.padding, self\.kernel_size)/self._output_padding(inputx, output_size, self.stride, self.padding, self.kernel_size, 2)/' \
  networks/net_DGMw.py networks/net_DGMa.py
echo "set up in $BASE; run: $(dirname "$0")/run_official.sh NITER THREADS [DGMw|DGMa]"
