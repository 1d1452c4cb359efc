#!/bin/bash
# one sitting on an idle machine, 2 threads each: GEMM rate; split MNIST CL1 HNET as a user runs it (MLflow
# tracking and maps): ours / hypercl / ours / ours without maps (hypercl runs with its plots off); then ours
# HNET+R CL3 (hypercl's HNET+R was timed an hour before, benchmarks/sittings/2026-12-07_sitting6.sh).
NEW=${NEW:-$(pwd)} OUT=${OUT:-/tmp/ref/s7} PY=${PY:-/work/main/.venv/bin/python}
export HYPERDGM_DATA=/work/shared/data
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=2
mkdir -p $OUT
ours() {  # name, experiment, extra overrides
  rm -rf $OUT/$1 && cd $NEW && /usr/bin/time -f "OURS_WALL %e s user %U" $PY -m hyperdgm.run \
    experiment=$2 threads=2 trainer.progress=false hydra.run.dir=$OUT/$1 \
    tracking.uri=sqlite:///$OUT/ours.db $3 2>&1 | grep -E "final:|OURS_WALL" | cut -c1-160
}
echo "start $(date) load $(cat /proc/loadavg)"
cd $NEW && $PY -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "ours 1 start $(date) load $(cat /proc/loadavg)"; ours cl1_a splitmnist_hnet
echo "hypercl start $(date) load $(cat /proc/loadavg)"
/work/shared/tools/reference-bench/hypercl/run_split_cl1.sh 2>&1 | grep -E "HYPERCL_RUN_SECONDS|ccuracy|Elapsed|during|final" | tail -8
echo "ours 2 start $(date) load $(cat /proc/loadavg)"; ours cl1_b splitmnist_hnet
echo "ours no maps start $(date) load $(cat /proc/loadavg)"; ours cl1_nomaps splitmnist_hnet tracking.maps=false
echo "ours hnet_r start $(date) load $(cat /proc/loadavg)"; ours hnet_r splitmnist_hnet_r
echo "end $(date) load $(cat /proc/loadavg)"
