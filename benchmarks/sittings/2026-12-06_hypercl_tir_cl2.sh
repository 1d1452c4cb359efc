#!/bin/bash
# the authors' hypercl HNET+TIR on split MNIST CL2 (the paper's forced preset, --infer_task_id --cl_scenario 2),
# seeds 0-2 side by side at 1 thread each: accuracy only (times shared the cores), to set our
# splitmnist_hnet_tir CL2 row (92.65 +- 1.23 against the paper's 94.43 +- 0.28) beside the authors' code here.
# Needs the hypercl clone and venv of ../shared/tools/reference-bench/hypercl/setup.sh under /tmp/ref.
export HYPERCL_REPO=/tmp/ref/hypercl HYPERCL_VENV=/tmp/ref/venv HYPERCL_SHOW_PLOTS=0 HYPERCL_THREADS=1
OUT=${OUT:-/work/main/runs/ref}
mkdir -p "$OUT"
echo "start $(date) load $(cat /proc/loadavg)"
for s in 0 1 2; do
  HYPERCL_OUT=/tmp/ref/tir_cl2_s$s /work/shared/tools/reference-bench/hypercl/run_split_cl1.sh --cl_scenario 2 \
    --random_seed $s > "$OUT/tir_cl2_s$s.out" 2>&1 &
done
wait
echo "end $(date) load $(cat /proc/loadavg)"
for s in 0 1 2; do echo "seed $s"; grep -E "Overall mean acc|Overall task inf acc|acc_after_mean|HYPERCL_RUN_SECONDS" "$OUT/tir_cl2_s$s.out"; done
