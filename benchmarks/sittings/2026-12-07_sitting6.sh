#!/bin/bash
# one sitting on an idle machine, 2 threads each: GEMM rate; split MNIST CL3 as a user runs it (MLflow tracking
# and maps): ours HNET+R / hypercl HNET+R / ours DGR+distill / the three-scenarios DGR+distill.
# Run from the tree to time; the reference codes set up by ../shared/tools/reference-bench (clones below).
NEW=${NEW:-$(pwd)} OUT=${OUT:-/tmp/ref/s6} PY=${PY:-/work/main/.venv/bin/python}
export HYPERDGM_DATA=/work/shared/data
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=2
mkdir -p $OUT
ours() {  # name, experiment
  rm -rf $OUT/$1 && cd $NEW && /usr/bin/time -f "OURS_WALL %e s user %U" $PY -m hyperdgm.run \
    experiment=$2 threads=2 trainer.progress=false hydra.run.dir=$OUT/$1 \
    tracking.uri=sqlite:///$OUT/ours.db 2>&1 | grep -E "final:|OURS_WALL"
}
echo "start $(date) load $(cat /proc/loadavg)"
cd $NEW && $PY -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "ours hnet_r start $(date) load $(cat /proc/loadavg)"; ours hnet_r splitmnist_hnet_r
echo "hypercl HNET+R start $(date) load $(cat /proc/loadavg)"
/work/shared/tools/reference-bench/hypercl/run_split_cl3_hnetr.sh 2>&1 | grep -E "HYPERCL_RUN_SECONDS|ccuracy|Elapsed|during|final" | tail -8
echo "ours dgr start $(date) load $(cat /proc/loadavg)"; ours dgr splitmnist_dgr
echo "three-scenarios DGR start $(date) load $(cat /proc/loadavg)"
REPO=/tmp/ref/cl3s THREADS=2 /work/shared/tools/reference-bench/three-scenarios/run_dgr_class.sh 2>&1 \
  | grep -E "ccuracy|Elapsed|=>|Total" | tail -8
echo "end $(date) load $(cat /proc/loadavg)"
