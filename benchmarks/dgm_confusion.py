"""Where a DGM run's classes go: the confusion of one of its checkpoints on real test images and on its own samples.

    python benchmarks/dgm_confusion.py RUN_DIR [task_NNN.pt] [--samples 500]

For every class seen at the checkpoint it prints how the classifier labels the real test images of that class
and ``--samples`` images drawn from that class's generator, with the critic's mean score and the mean pixel of
each. A class lost by the classifier while its generated images are still labelled right points at the
generator's coverage of the class (the classifier learns it from those samples only), not at the masks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperdgm.data.readers import MissingDataError  # noqa: E402
from hyperdgm.experiment import benchmark_of, method_config  # noqa: E402
from hyperdgm.methods import build_method  # noqa: E402
from hyperdgm.rundir import read_checkpoint  # noqa: E402
from hyperdgm.scenarios import make_scenario  # noqa: E402
from hyperdgm.trainer import Trainer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("checkpoint", nargs="?", help="a file in RUN_DIR/checkpoints (default: the newest)")
    ap.add_argument("--samples", type=int, default=500, help="generated images per class")
    ap.add_argument("--data-root", default=None, help="default: the run's data_root")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = OmegaConf.load(args.run_dir / "run_config.yaml")
    c = OmegaConf.to_container(cfg, resolve=True)
    if c["method"]["name"] != "dgm":
        ap.error(f"{args.run_dir} is a {c['method']['name']} run, not dgm")
    path = args.run_dir / "checkpoints" / args.checkpoint if args.checkpoint else Trainer.latest_checkpoint(args.run_dir)
    if path is None or not path.exists():
        ap.error(f"no checkpoint {path or 'in ' + str(args.run_dir / 'checkpoints')}")
    try:
        bench = benchmark_of(c, args.data_root)
    except MissingDataError as err:
        ap.error(str(err))
    scenario = make_scenario(c["scenario"]["name"], bench.n_classes_per_task)
    method = build_method(method_config(cfg))
    method.setup(bench, scenario, torch.device("cpu"), torch.Generator())
    method.load_checkpoint_state(read_checkpoint(path)["method"])
    method.eval()
    n = method.n_seen
    model = method.memory.model
    print(f"{path}: {n} classes seen; rows: the class, columns: how many were labelled as each class")
    with torch.no_grad():
        for t in range(n):
            task = bench.tasks[t]
            x, _ = task.batch("test", torch.arange(len(task.split("test"))))
            pred = method.predict(x).argmax(1)
            critic, _ = model.discriminator(method.pixels.to_unit(x))
            print(f"real {t:>2}: {torch.bincount(pred, minlength=n).tolist()}  critic {float(critic.mean()):.2f}"
                  f"  mean pixel {float(method.pixels.to_unit(x).mean()):.3f}")
        for t in range(n):
            xs, _, _ = method.memory.replay_batch([t], args.samples, generator=torch.Generator().manual_seed(0))
            pred = model.classify(xs, scenario.n_seen_classes(n)).argmax(1)
            critic, _ = model.discriminator(xs)
            print(f"gen  {t:>2}: {torch.bincount(pred, minlength=n).tolist()}  critic {float(critic.mean()):.2f}"
                  f"  mean pixel {float(xs.mean()):.3f}")


if __name__ == "__main__":
    main()
