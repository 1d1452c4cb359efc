#!/usr/bin/env bash
# usage: run_official.sh NITER THREADS [METHOD=DGMw|DGMa]
# Runs the official DGM code (SAP/machine-learning-dgm @ 3a4f429, exported to $DGM_BASE/code by setup.sh)
# as `run.py --dataset mnist --method METHOD`, all 10 tasks, with the cfg's niter set to NITER epochs per task
# (cfg copy in the run dir; everything else as in the official cfg), on THREADS torch threads.
set -euo pipefail
NITER=${1:?NITER}; THREADS=${2:?THREADS}; METHOD=${3:-DGMw}
case "$METHOD" in DGMw) CFG=cfg_mnist_dgmw.yml;; DGMa) CFG=cfg_mnist_dgma.yml;; *) echo "METHOD must be DGMw or DGMa" >&2; exit 2;; esac
BASE=${DGM_BASE:-/tmp/ref/dgm}  # setup.sh made it: code/ (the official code, patched), venv/; runs/ and dat/ go here
PY=$BASE/venv/bin/python
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=$HERE/shims
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS DGM_THREADS=$THREADS
export DGM_CODE=$BASE/code PYTHONWARNINGS=ignore
RUN=$BASE/runs/${METHOD}_niter${NITER}_thr${THREADS}_$(date +%Y%m%d_%H%M%S)
mkdir -p "$RUN/cfg" "$RUN/logs" "$RUN/outputs" "$BASE/dat"
ln -s "$BASE/dat" "$RUN/dat"
for f in cfg_mnist_dgmw.yml cfg_mnist_dgma.yml; do
  sed -E "s/^niter:[[:space:]]*[0-9]+/niter: $NITER/" "$BASE/code/cfg/$f" > "$RUN/cfg/$f"
done
grep -q "^niter: $NITER\$" "$RUN/cfg/$CFG" || { echo "niter override failed" >&2; exit 1; }
diff "$BASE/code/cfg/$CFG" "$RUN/cfg/$CFG" > "$RUN/cfg.diff" || true

# one-off data cache (split_MNIST.get writes dat/split_mnist_32/*.bin); not part of the timed run
if [ "$(ls "$BASE/dat/split_mnist_32" 2>/dev/null | wc -l)" != 40 ]; then
  rm -rf "$BASE/dat/split_mnist_32"
  (cd "$RUN" && $PY "$HERE/dgm_launch.py" --prep-data > "$RUN/prep.log" 2>&1) || { rm -rf "$BASE/dat/split_mnist_32"; echo "data prep failed, see $RUN/prep.log" >&2; exit 1; }
  tail -1 "$RUN/prep.log"
fi

echo "run dir: $RUN  (log: $RUN/run.log)"
T0=$(date +%s.%N)
set +e
(cd "$RUN" && $PY "$HERE/dgm_launch.py" "$METHOD" > "$RUN/run.log" 2>&1)
RC=$?
set -e
T1=$(date +%s.%N)
WALL=$(echo "$T1 - $T0" | bc)
echo "exit code: $RC"
$PY "$HERE/summarize.py" "$RUN/run.log" "$WALL" "$NITER" "$THREADS" "$METHOD" | tee "$RUN/summary.txt"
exit $RC
