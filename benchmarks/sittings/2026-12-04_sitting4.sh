#!/bin/bash
# one sitting (idle machine, 2 threads each): permuted MNIST-10 CL1 HNET at 100 and 300 iterations per task,
# hypercl then ours at each length; a run's wall time is E + N * S, so two lengths give the paper's 5000
export HYPERDGM_DATA=/work/shared/data
HERE=/work/main/benchmarks/reference/hypercl_perm
OURS=${OURS:-/tmp/ours2}
perm() {  # iters
  cd /tmp/ref && rm -rf /tmp/ref/perm_$1 && OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 HYPERCL_THREADS=2 HYPERCL_SHOW_PLOTS=0 HYPERCL_N_ITER=$1 \
    PYTHONPATH=$HERE/tvshim /usr/bin/time -f "HYPERCL_WALL %e s user %U" venv/bin/python $HERE/hypercl_launch_perm.py /tmp/ref/hypercl \
    --infer_task_id --cl_scenario 1 --out_dir /tmp/ref/perm_$1 < /dev/null > /tmp/ref/perm_$1.log 2>&1
  grep -E "HYPERCL_RUN_SECONDS|HYPERCL_WALL|Overall mean acc" /tmp/ref/perm_$1.log | tail -4
}
ours() {  # iters
  cd $OURS && rm -rf /tmp/ref/s4_$1 && PYTHONPATH=$OURS /usr/bin/time -f "OURS_WALL %e s user %U" /work/main/.venv/bin/python -m hyperdgm.run \
    experiment=pmnist_hnet trainer.iters_per_task=$1 threads=2 trainer.progress=false hydra.run.dir=/tmp/ref/s4_$1 \
    tracking.uri=sqlite:////tmp/ref/ours.db 2>&1 | grep -E "final:|OURS_WALL" | cut -c1-200
}
echo "start $(date) load $(cat /proc/loadavg)"
cd /work/main && .venv/bin/python -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
for n in 100 300; do
  echo "hypercl P10 $n start $(date) load $(cat /proc/loadavg)"; perm $n
  echo "ours P10 $n start $(date) load $(cat /proc/loadavg)"; ours $n
done
echo "end $(date) load $(cat /proc/loadavg)"
