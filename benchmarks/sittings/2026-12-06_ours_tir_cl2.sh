#!/bin/bash
# ours, split MNIST HNET+TIR CL2, seeds 1-2 on an idle machine after the authors' sitting (seed 0 ran beside it, 1 thread)
export HYPERDGM_DATA=/work/shared/data
cd /tmp/ours
for s in 1 2; do
  echo "seed $s start $(date) load $(cat /proc/loadavg)"
  /work/main/.venv/bin/python -m hyperdgm.run experiment=splitmnist_hnet_tir scenario=cl2 seed=$s threads=2 trainer.progress=false \
    tracking.maps=false tracking.uri=sqlite:////work/main/runs/ref/ours.db hydra.run.dir=/work/main/runs/ref/ours_tir_cl2_s$s \
    > /work/main/runs/ref/ours_tir_cl2_s$s.log 2>&1
  echo "seed $s end $(date) rc $?"
done
