#!/bin/bash
# one sitting on an idle machine, 2 threads each: GEMM rate; split MNIST CL1 HNET as a user runs it (MLflow
# tracking and maps): ours (this commit) / hypercl / ours before the session (20ef4a5) / ours (this commit).
# NEW and OLD are clones of the two commits (the script is run from NEW's tree).
NEW=${NEW:-/tmp/new} OLD=${OLD:-/tmp/ours} OUT=${OUT:-/tmp/ref/s5}
export HYPERDGM_DATA=/work/shared/data
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=2
mkdir -p $OUT
ours() {  # name, code dir
  rm -rf $OUT/$1 && cd $2 && /usr/bin/time -f "OURS_WALL %e s user %U" /work/main/.venv/bin/python -m hyperdgm.run \
    experiment=splitmnist_hnet threads=2 trainer.progress=false hydra.run.dir=$OUT/$1 \
    tracking.uri=sqlite:///$OUT/ours.db 2>&1 | grep -E "final:|OURS_WALL"
}
echo "start $(date) load $(cat /proc/loadavg)"
cd $NEW && /work/main/.venv/bin/python -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "ours (new) 1 start $(date) load $(cat /proc/loadavg)"; ours new1 $NEW
echo "hypercl start $(date) load $(cat /proc/loadavg)"
/work/shared/tools/reference-bench/hypercl/run_split_cl1.sh 2>&1 | grep -E "HYPERCL_RUN_SECONDS|ccuracy|Elapsed|during|final" | tail -8
echo "ours (old) start $(date) load $(cat /proc/loadavg)"; ours old $OLD
echo "ours (new) 2 start $(date) load $(cat /proc/loadavg)"; ours new2 $NEW
echo "end $(date) load $(cat /proc/loadavg)"
