#!/bin/bash
# one sitting on an idle machine, 2 threads each: GEMM rate; the official DGM code (SAP/machine-learning-dgm at
# 3a4f429, MNIST DGMw, its cfg with niter 1 and 3 epochs per task (it validates every second epoch, so odd lengths fit 101 exactly): two lengths give its 101-epoch run, as for
# permuted MNIST) around ours `cil_mnist_dgmw_short` as a user runs it; then split MNIST CL1 HNET: ours / hypercl /
# ours. The official code runs unchanged under CPU shims (torchvision, keras' MNIST loader, tensorflow's logger,
# `.cuda()`): OFFICIAL=<script> runs it as `<script> NITER THREADS` and prints per-task wall times.
NEW=${NEW:-$(pwd)} OUT=${OUT:-/tmp/ref/s8} PY=${PY:-/work/main/.venv/bin/python}
OFFICIAL=${OFFICIAL:-/tmp/ref/dgm/run_official.sh}
export HYPERDGM_DATA=/work/shared/data
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=2
mkdir -p $OUT
ours() {  # name, experiment, extra overrides
  rm -rf $OUT/$1 && cd $NEW && /usr/bin/time -f "OURS_WALL %e s user %U" $PY -m hyperdgm.run \
    experiment=$2 threads=2 trainer.progress=false hydra.run.dir=$OUT/$1 \
    tracking.uri=sqlite:///$OUT/ours.db $3 2>&1 | grep -E "done in|final:|OURS_WALL" | cut -c1-220
}
echo "start $(date) load $(cat /proc/loadavg)"
cd $NEW && $PY -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "official DGMw niter 1 start $(date) load $(cat /proc/loadavg)"; $OFFICIAL 1 2 2>&1 | tail -16
echo "ours dgmw_short start $(date) load $(cat /proc/loadavg)"; ours dgmw cil_mnist_dgmw_short
echo "official DGMw niter 3 start $(date) load $(cat /proc/loadavg)"; $OFFICIAL 3 2 2>&1 | tail -16
echo "ours CL1 start $(date) load $(cat /proc/loadavg)"; ours cl1_a splitmnist_hnet
echo "hypercl start $(date) load $(cat /proc/loadavg)"
/work/shared/tools/reference-bench/hypercl/run_split_cl1.sh 2>&1 | grep -E "HYPERCL_RUN_SECONDS|ccuracy|Elapsed|during|final" | tail -8
echo "ours CL1 2 start $(date) load $(cat /proc/loadavg)"; ours cl1_b splitmnist_hnet
# the fixed cost of a run (10 iterations per task) before and after 43ebeb7 (deterministic flag, maps' t-SNE),
# alternated; BASE is a checkout of its parent
BASE=${BASE:-/tmp/ab/base}
for i in 1 2 3; do for v in $BASE $NEW; do
  s=$(date +%s.%N); (cd $v && $PY -m hyperdgm.run experiment=splitmnist_hnet_r trainer.iters_per_task=10 threads=2 \
    trainer.progress=false hydra.run.dir=$OUT/fixed tracking.uri=sqlite:///$OUT/fixed.db >/dev/null 2>&1)
  echo "fixed cost $(basename $v) $i: $(echo "$(date +%s.%N) - $s" | bc) s"; done; done
echo "end $(date) load $(cat /proc/loadavg)"
