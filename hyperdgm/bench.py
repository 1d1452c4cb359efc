"""Micro-benchmarks: ``python -m hyperdgm.bench <command> [options]`` (``make bench ARGS="reg ..."``).

Commands:
    reg   cost of the hypernetwork output regulariser (forward + backward) per training step, against
          the number of past tasks, for the fast (factorised) form, the direct form (``fast=False``) and
          the legacy form (hypnettorch forward + ``(pred - target).pow(2).sum()``), each for all past
          tasks and for ``tasks_per_step`` = 1 and 2; plus the task-loss step for reference.
    train whole runs (any Hydra overrides, e.g. ``experiment=splitmnist_hnet``): final and during
          accuracy, forgetting, compression ratio, wall time in total and per task.
    profile where a whole run's time goes (:mod:`hyperdgm.profiling`): exclusive wall seconds per region
          of the training loop (data, hypernetwork, target, backward, penalties, optimizer, replay,
          the generator's own step, evaluation, checkpoints), e.g.
          ``profile --run "experiment=splitmnist_hnet_r trainer.iters_per_task=200"``.
    floor the compute floor of a whole run: its matrix-product and convolution FLOPs (counted by
          ``torch.utils.flop_counter`` on two short runs and extrapolated to the preset's iterations,
          which is exact because a run's FLOPs are linear in its iterations per task) and the time they
          take at this CPU's best matrix-product rate (a large ``mm`` at ``--threads``): no fp32
          implementation of the same computation runs faster here, e.g.
          ``floor --run "experiment=splitmnist_hnet_r"``.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .metrics import DURING_INFERRED

__all__ = ["main"]

# The paper presets (von Oswald et al., 2020): target MLP and hypernetwork of split / permuted MNIST.
PRESETS: dict[str, dict[str, Any]] = {
    "split_mnist": dict(n_in=784, hidden_layers=(400, 400), n_out=2, max_past=4,
                        hnet=dict(hidden=(10, 10), activation="relu", chunk_size=42000, chunk_emb_size=96,
                                  task_emb_size=96)),
    "permuted_mnist": dict(n_in=1024, hidden_layers=(1000, 1000), n_out=10, max_past=9,
                           hnet=dict(hidden=(25, 25), activation="elu", chunk_size=78000, chunk_emb_size=8,
                                     task_emb_size=24)),
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _min_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _legacy_penalty(reg: Any, gen: Any, delta: Sequence[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """The regulariser as first written: hypnettorch forward at ``theta + delta``, ``pow(2).sum()``."""
    idx = reg._subset(generator)
    ids = list(range(reg.n_past)) if idx is None else idx
    pred = gen.hnet.forward(cond_input=gen._embeddings(ids), weights=gen.hypnettorch_weights(delta),
                            ret_format="flattened")
    target = reg.targets if idx is None else reg.targets.index_select(0, idx)
    n_sel = reg.n_past if idx is None else int(idx.numel())
    return (pred - target).pow(2).sum() * (reg.beta / n_sel)


def bench_reg(args: argparse.Namespace) -> list[str]:
    from hypnettorch.mnets import MLP

    from .hnet import OutputRegularizer, WeightGenerator, adam_lookahead, trainable_parameters

    p = PRESETS[args.preset]
    max_past = args.max_past or p["max_past"]
    torch.manual_seed(0)
    mnet = MLP(n_in=p["n_in"], n_out=p["n_out"], hidden_layers=p["hidden_layers"], no_weights=True, verbose=False)
    gen = WeightGenerator(mnet, **p["hnet"])
    x = torch.randn(args.batch_size, p["n_in"])
    y = torch.randint(0, p["n_out"], (args.batch_size,))
    modes = [("fast", None), ("fast", 1), ("fast", 2), ("direct", None), ("direct", 1), ("direct", 2)]
    if not args.no_legacy:
        modes += [("legacy", None), ("legacy", 1), ("legacy", 2)]
    rows: list[tuple[int, float, list[float]]] = []
    for n_past in range(1, max_past + 1):
        while gen.n_tasks < n_past:
            gen.add_task()
        reg = OutputRegularizer(0.01)
        reg.begin_task(gen, current_task=n_past)
        cur = gen.add_task() if gen.n_tasks == n_past else n_past
        opt = torch.optim.Adam(trainable_parameters(gen, cur), lr=1e-3)

        def task_step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(mnet.forward(x, weights=gen(cur)), y).backward()

        for _ in range(3):  # move away from the snapshot so the penalty is not trivially zero
            task_step()
            opt.step()
        task_ms = _min_time(task_step, args.repeats)
        delta = adam_lookahead(opt, gen.hnet_parameters())
        times = []
        for mode, tps in modes:
            reg.tasks_per_step = tps
            g = torch.Generator().manual_seed(0)
            params = list(gen.parameters())

            def reg_step(mode: str = mode, g: torch.Generator = g) -> None:
                for q in params:
                    q.grad = None
                if mode == "legacy":
                    val = _legacy_penalty(reg, gen, delta, g)
                else:
                    val = reg.penalty(gen, delta=delta, generator=g, fast=mode == "fast")
                val.backward()

            times.append(_min_time(reg_step, args.repeats))
        rows.append((n_past, task_ms, times))
        print(f"  past tasks {n_past}: " + ", ".join(f"{m}/{t or 'all'} {v:.1f}" for (m, t), v in zip(modes, times)),
              file=sys.stderr, flush=True)
    head = ["past tasks", "task step"] + [f"{m} {'all' if t is None else f'tps={t}'}" for m, t in modes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n_past, task_ms, times in rows:
        lines.append("| " + " | ".join([str(n_past), f"{task_ms:.1f}"] + [f"{v:.1f}" for v in times]) + " |")
    n_params = gen.param_counts()
    intro = [
        f"Output regulariser, preset `{args.preset}`: target {n_params['target']:,} weights, hnet {n_params['hnet']:,} "
        f"parameters ({p['hnet']}).",
        "Milliseconds per training step (min over repeats) of `penalty(gen, delta=...)` + `backward()`; "
        "`task step`: generate the current task's weights + target-net forward/backward "
        f"(batch {args.batch_size}). fast: factorised form (default), direct: `fast=False`, "
        "legacy: hypnettorch forward + `pow(2).sum()` (the implementation before the fast form); "
        "tps: `tasks_per_step`.",
        "",
    ]
    return intro + lines


def _during(summary: dict[str, float]) -> str:
    """The during column; a method that infers the task gets its optimistic mean diagonal, marked."""
    return f"{summary['acc_during']:.2f}" if "acc_during" in summary else f"({summary[DURING_INFERRED]:.2f} optimistic)"


def bench_train(args: argparse.Namespace) -> list[str]:
    """Full training runs, one per ``--run`` (a quoted string of Hydra overrides), timed end to end."""
    import logging
    import tempfile

    from .experiment import run_experiment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = ["| run | final acc | during acc | forgetting | compression | wall s | s / task |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for spec in args.run:
        cfg = _compose(spec, args.threads)
        t0 = time.perf_counter()
        res = run_experiment(cfg, tempfile.mkdtemp(prefix="hyperdgm-bench-"))
        wall = time.perf_counter() - t0
        c = res.param_counts.get("compression_ratio", float("nan"))
        per = " / ".join(f"{t:.0f}" for t in res.task_times)
        rows.append(f"| `{spec}` ({cfg.method.name}, {cfg.benchmark.name}, {cfg.scenario.name}) | "
                    f"{res.summary['acc_avg']:.2f} | {_during(res.summary)} | "
                    f"{res.summary['forgetting']:.2f} | {c:.3f} | {wall:.0f} | {per} |")
        print(rows[-1], flush=True)
    return ["Whole runs (`tracking=none`, no checkpoints); wall time includes reading the data and every evaluation.",
            "", *rows]


def _compose(spec: str, threads: int) -> Any:
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    overrides = spec.split() + ["tracking=none", "trainer.progress=false", "trainer.checkpoint=false",
                                f"threads={threads}"]
    with initialize_config_dir(config_dir=conf, version_base=None):
        return compose("config", overrides=overrides)


def bench_profile(args: argparse.Namespace) -> list[str]:
    """One profiled whole run per ``--run``: a table of regions per run."""
    import logging
    import tempfile

    from .config_check import resolve_device
    from .experiment import run_experiment
    from .profiling import profiling, table

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    out: list[str] = []
    for spec in args.run:
        cfg = _compose(spec, args.threads)
        with profiling(resolve_device(cfg.device)) as prof:
            res = run_experiment(cfg, tempfile.mkdtemp(prefix="hyperdgm-profile-"))
        block = [f"### `{spec}`", "",
                f"{cfg.method.name}, {cfg.benchmark.name}, {cfg.scenario.name}: final accuracy "
                f"{res.summary['acc_avg']:.2f}, {prof.wall:.1f} s in all (training {sum(res.task_times):.1f} s). "
                "Exclusive time per region (a region's own time, without the regions nested in it; "
                "`step/memory/backward` is the generator's backward inside a classifier step).", "",
                *table(prof), ""]
        print("\n".join(block), flush=True)
        out += block
    return out


def gemm_rate(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """This CPU's best fp32 matrix-product rate (GFLOP/s): the fastest of ``repeats`` ``n^3`` products."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        ms = _min_time(lambda: torch.mm(a, b), repeats, warmup=2)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / ms / 1e6


def extrapolate(flops_a: float, flops_2a: float, a: int, n: int) -> float:
    """FLOPs of a run with ``n`` iterations per task from runs with ``a`` and ``2a``: a run's FLOPs are
    ``E + iters * S`` (evaluation and setup ``E``, ``S`` the steps' FLOPs summed over the tasks)."""
    per_iter = (flops_2a - flops_a) / a
    return flops_a + (n - a) * per_iter


def count_flops(cfg: Any) -> tuple[dict[str, int], int]:
    """Matrix-product and convolution FLOPs of one whole run (forward and backward), per aten op, and
    the run's number of tasks."""
    import tempfile

    from torch.utils.flop_counter import FlopCounterMode

    from .experiment import run_experiment

    with FlopCounterMode(display=False) as fc:
        res = run_experiment(cfg, tempfile.mkdtemp(prefix="hyperdgm-flops-"))
    ops = {str(op).split(".")[-1]: int(v) for op, v in fc.get_flop_counts().get("Global", {}).items()}
    return ops, int(res.R.shape[0])


def bench_floor(args: argparse.Namespace) -> list[str]:
    """The compute floor of each ``--run``: its counted FLOPs at this CPU's best matrix-product rate."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    rate = gemm_rate(args.threads)
    a = int(args.iters)
    rows = [f"Matrix products and convolutions (forward and backward) counted by `torch.utils.flop_counter` on runs "
            f"of {a} and {2 * a} iterations per task, extrapolated to the preset's; the floor is their time at "
            f"{rate:.1f} GFLOP/s, this CPU's best fp32 rate at {args.threads} thread(s) (a 1024^3 `mm`). Elementwise "
            "work, optimizers and data are not counted, so the floor is a lower bound on any fp32 implementation's time.",
            "", "| run | iterations / task | GFLOP / run | of which | GFLOP / step | floor s |",
            "|---|---:|---:|---|---:|---:|"]
    for spec in args.run:
        full = _compose(spec, args.threads)
        if full.trainer.get("epochs"):
            raise SystemExit(f"floor: {spec!r} trains by epochs (trainer.epochs={full.trainer.epochs}); "
                             "add trainer.epochs=null trainer.iters_per_task=N to the run")
        n = int(full.trainer.iters_per_task)
        (c1, n_tasks), (c2, _) = (count_flops(_compose(f"{spec} trainer.iters_per_task={k}", args.threads))
                                  for k in (a, 2 * a))
        per_op = {op: extrapolate(c1.get(op, 0), c2.get(op, 0), a, n) for op in sorted(set(c1) | set(c2))}
        total = sum(per_op.values())
        per_step = sum(c2.values()) - sum(c1.values())  # a more iterations in each task
        split = ", ".join(f"{op} {100 * v / total:.0f}%" for op, v in sorted(per_op.items(), key=lambda kv: -kv[1]))
        rows.append(f"| `{spec}` | {n} | {total / 1e9:,.0f} | {split} | {per_step / (a * n_tasks) / 1e9:.2f} | "
                    f"{total / 1e9 / rate:.0f} |")
        print(rows[-1], flush=True)
    return rows


def _one_line(message: str) -> str:
    """Hydra's composition errors on one line: the first line and the options it lists (not its search path)."""
    lines = message.splitlines()
    options: list[str] = []
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Available options")]
    if starts:
        for ln in lines[starts[0] + 1:]:
            if not ln.startswith("\t"):  # the options are indented; "Config search path:" is not
                break
            options.append(ln.strip())
    return lines[0].strip() + (f" (available: {', '.join(options)})" if options else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperdgm.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--out", default=None, help="also write the table as markdown to this file")
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("reg", help="output regulariser cost vs number of past tasks")
    reg.add_argument("--preset", choices=sorted(PRESETS), default="permuted_mnist")
    reg.add_argument("--max-past", type=int, default=None, help="largest number of past tasks (preset's default)")
    reg.add_argument("--repeats", type=int, default=5)
    reg.add_argument("--batch-size", type=int, default=128)
    reg.add_argument("--no-legacy", action="store_true", help="skip the legacy (pre-optimisation) form")
    train = sub.add_parser("train", help="whole training runs: accuracy and wall time")
    train.add_argument("--run", action="append", required=True,
                       help='Hydra overrides of one run, quoted, e.g. --run "experiment=splitmnist_hnet"; repeatable')
    train.set_defaults(func=bench_train)
    profile = sub.add_parser("profile", help="where a whole run's time goes, per region of the training loop")
    profile.add_argument("--run", action="append", required=True,
                         help='Hydra overrides of one run, quoted; repeatable')
    profile.set_defaults(func=bench_profile)
    floor = sub.add_parser("floor", help="the compute floor of whole runs: counted FLOPs at the CPU's best GEMM rate")
    floor.add_argument("--run", action="append", required=True, help="Hydra overrides of one run, quoted; repeatable")
    floor.add_argument("--iters", type=int, default=20, help="iterations per task of the short counted runs")
    floor.set_defaults(func=bench_floor)
    for sp in (reg, train, profile, floor):  # accept the global options after the command too
        sp.add_argument("--threads", type=int, default=argparse.SUPPRESS)
        sp.add_argument("--out", default=argparse.SUPPRESS)
    reg.set_defaults(func=bench_reg)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hydra.errors import HydraException

    from .run import BAD_INPUT
    try:
        lines = args.func(args)
    except (*BAD_INPUT, HydraException) as err:  # bad input: one line, as hyperdgm.run says it
        sys.stderr.write(f"error: {_one_line(str(err))}\n")
        return 2
    print("\n".join(lines))
    if args.out:
        cmd = "python -m hyperdgm.bench " + shlex.join(sys.argv[1:] if argv is None else argv)
        meta = [f"# hyperdgm.bench {args.command}", "", f"- command: `{cmd}`", f"- torch {torch.__version__}, "
                f"{torch.get_num_threads()} thread(s), CPU: {_cpu_model()}, Python {platform.python_version()}", ""]
        with open(args.out, "w") as f:
            f.write("\n".join(meta + lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
