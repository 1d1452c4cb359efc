#!/bin/bash
# one sitting (idle machine: other jobs paused with SIGSTOP, 2 threads each): GEMM rate; split MNIST CL1
# HNET, ours / hypercl / ours (ours with its default MLflow tracking and maps, as a user runs it)
export HYPERDGM_DATA=/work/shared/data
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=2
ours() {  # name, overrides...
  name=$1; shift
  cd /tmp/ours && rm -rf /tmp/ref/s3_$name && /usr/bin/time -f "OURS_WALL %e s user %U" /work/main/.venv/bin/python -m hyperdgm.run "$@" \
    threads=2 trainer.progress=false hydra.run.dir=/tmp/ref/s3_$name tracking.uri=sqlite:////tmp/ref/ours.db 2>&1 | grep -E "final:|OURS_WALL"
}
echo "start $(date) load $(cat /proc/loadavg)"
cd /work/main && .venv/bin/python -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "ours hnet 1 start $(date) load $(cat /proc/loadavg)"; ours hnet1 experiment=splitmnist_hnet
echo "hypercl HNET start $(date) load $(cat /proc/loadavg)"
/work/shared/tools/reference-bench/hypercl/run_split_cl1.sh 2>&1 | grep -E "HYPERCL_RUN_SECONDS|ccuracy|Elapsed|during|final" | tail -8
echo "ours hnet 2 start $(date) load $(cat /proc/loadavg)"; ours hnet2 experiment=splitmnist_hnet
echo "end $(date) load $(cat /proc/loadavg)"
