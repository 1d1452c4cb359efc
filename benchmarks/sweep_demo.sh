#!/usr/bin/env bash
# One hypernetwork-size sweep (split MNIST HNET CL1 at 4 sizes, 300 iterations per task) through a launcher
# into a tracking server, to compare launchers' wall time on the same sweep:
#   mlflow server --backend-store-uri sqlite:///$PWD/runs/sweep_demo/mlflow.db \
#       --artifacts-destination $PWD/runs/sweep_demo/mlartifacts --host 127.0.0.1 --port 5055 &
#   benchmarks/sweep_demo.sh basic  http://127.0.0.1:5055   # serial, 1 thread
#   benchmarks/sweep_demo.sh joblib http://127.0.0.1:5055   # 2 jobs x 1 thread
#   RAY_ADDRESS=127.0.0.1:6379 benchmarks/sweep_demo.sh ray http://127.0.0.1:5055  # a Ray head, 1 CPU a job
# Extra arguments are further overrides; SWEEP replaces what is swept (default: the four sizes), e.g.
# SWEEP="hnet_size=xs seed=1,2,3,4" for four jobs of equal length.
set -euo pipefail
cd "$(dirname "$0")/.."
launcher=$1; uri=$2; shift 2
# data root as `make` sets it: $HYPERDGM_DATA, else ../shared/data when present
if [ -z "${HYPERDGM_DATA:-}" ] && [ -d ../shared/data ]; then export HYPERDGM_DATA="$(cd ../shared/data && pwd)"; fi
case $launcher in
  basic) extra=() ;;
  joblib) extra=(launcher=joblib hydra.launcher.n_jobs=2) ;;
  ray) extra=(launcher=ray "data_root=$HYPERDGM_DATA") ;;  # jobs run in the head's cwd
  *) echo "launcher must be basic, joblib or ray, got $launcher" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-.venv/bin/python}
# shellcheck disable=SC2086  # SWEEP is a list of overrides
exec "$PYTHON" -m hyperdgm.run --multirun experiment=splitmnist_hnet ${SWEEP:-hnet_size=xs,s,m,l} trainer.iters_per_task=300 \
  threads=1 trainer.progress=false "tracking.uri=$uri" "${extra[@]}" \
  "hydra.sweep.dir=$PWD/runs/sweep_demo/$launcher/$(date +%Y%m%d-%H%M%S)-$$" "$@"
