#!/bin/bash
# one sitting (idle machine, 2 threads each): GEMM rate; HNET+R CL3 and DGR CL3, ours vs references;
# P10 HNET at 100 and 600 iterations per task, ours vs hypercl (extrapolated to 5000)
export HYPERDGM_DATA=/work/shared/data
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=2
ours() {  # name, overrides...
  name=$1; shift
  cd /tmp/ours && /usr/bin/time -f "OURS_WALL %e s user %U" /work/main/.venv/bin/python -m hyperdgm.run "$@" threads=2 trainer.progress=false hydra.run.dir=/tmp/ref/s2_$name tracking.uri=sqlite:////tmp/ref/ours.db 2>&1 | grep -E "final:|OURS_WALL"
}
perm() {  # iters
  cd /tmp/ref && rm -rf /tmp/ref/perm_$1 && OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 HYPERCL_N_ITER=$1 PYTHONPATH=/tmp/ref/tvshim \
    /usr/bin/time -f "HYPERCL_WALL %e s user %U" venv/bin/python hypercl_launch_perm.py /tmp/ref/hypercl --infer_task_id --cl_scenario 1 --out_dir /tmp/ref/perm_$1 < /dev/null > /tmp/ref/perm_$1.log 2>&1
  grep -E "HYPERCL_RUN_SECONDS|HYPERCL_WALL|Overall mean acc" /tmp/ref/perm_$1.log | tail -4
}
echo "start $(date) load $(cat /proc/loadavg)"
cd /work/main && .venv/bin/python -c "from hyperdgm.bench import gemm_rate; print('GEMM rate 1 thread %.1f, 2 threads %.1f GFLOP/s' % (gemm_rate(1), gemm_rate(2)))"
echo "hypercl HNET+R start $(date) load $(cat /proc/loadavg)"
/work/shared/tools/reference-bench/hypercl/run_split_cl3_hnetr.sh 2>&1 | grep -E "HYPERCL_RUN_SECONDS|ccuracy|Elapsed|during|final" | tail -8
echo "ours hnet_r start $(date) load $(cat /proc/loadavg)"
ours hnet_r experiment=splitmnist_hnet_r
echo "three-scenarios DGR start $(date) load $(cat /proc/loadavg)"
REPO=/tmp/ref3/cl THREADS=2 /work/shared/tools/reference-bench/three-scenarios/run_dgr_class.sh 2>&1 | grep -iE "accuracy|time|Elapsed" | tail -8
echo "ours dgr start $(date) load $(cat /proc/loadavg)"
ours dgr experiment=splitmnist_dgr
for n in 100 600; do
  echo "hypercl P10 $n start $(date) load $(cat /proc/loadavg)"; perm $n
  echo "ours P10 $n start $(date) load $(cat /proc/loadavg)"; ours p10_$n experiment=pmnist_hnet trainer.iters_per_task=$n
done
echo "end $(date) load $(cat /proc/loadavg)"
