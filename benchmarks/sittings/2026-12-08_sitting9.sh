#!/bin/bash
# one sitting on an idle machine, 2 threads each: GEMM rate; split MNIST CL3 DGR+distill as a user runs it (MLflow
# tracking and maps): ours (fp32, the preset) / the three-scenarios code / ours with trainer.precision=bf16.
# Run from the tree to time; the three-scenarios code set up by ../shared/tools/reference-bench (clone below).
NEW=${NEW:-$(pwd)} OUT=${OUT:-/tmp/ref/s9} PY=${PY:-/work/main/.venv/bin/python}
export HYPERDGM_DATA=/work/shared/data
mkdir -p $OUT
ours() {  # name, overrides
  rm -rf $OUT/$1 && cd $NEW && /usr/bin/time -f "OURS_WALL %e s user %U" $PY -m hyperdgm.run \
    experiment=splitmnist_dgr $2 threads=2 trainer.progress=false hydra.run.dir=$OUT/$1 \
    tracking.uri=sqlite:///$OUT/ours.db 2>&1 | grep -E "final:|OURS_WALL"
}
echo "start $(date) load $(cat /proc/loadavg)"
cd $NEW && $PY -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "ours dgr fp32 start $(date) load $(cat /proc/loadavg)"; ours dgr_fp32 ""
echo "three-scenarios DGR start $(date) load $(cat /proc/loadavg)"
REPO=/tmp/ref/cl3s THREADS=2 /work/shared/tools/reference-bench/three-scenarios/run_dgr_class.sh 2>&1 \
  | grep -E "ccuracy|Elapsed|=>|Total" | tail -8
echo "ours dgr bf16 start $(date) load $(cat /proc/loadavg)"; ours dgr_bf16 "trainer.precision=bf16"
echo "end $(date) load $(cat /proc/loadavg)"
