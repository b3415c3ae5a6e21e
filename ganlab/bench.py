"""Benchmarks: what the harness costs over a bare PyTorch loop on the same nets and data.

`python -m ganlab.bench [--device cpu|cuda] [--steps N] [--repeats R]` times the training
loop of `ganlab.train` (logging and evaluation off: only its training clock is read) against
a bare loop written inline here, on identical networks, optimisers and data tensors, in one
process, alternating the two R times and comparing medians. It prints one line per case and
the harness/bare ratio (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ganlab.assemble import make_adam
from ganlab.config import ConfigError
from ganlab.configure import compose
from ganlab.cores import available_cores
from ganlab.graphs import uncapturable
from ganlab.result import ResultFile
from ganlab.syncs import SyncCounter
from ganlab.train import Trainer

CASES = {
    "mlp/ring8": ["data=ring8", "model=mlp", "train.batch_size=256"],
    "dcgan/mnist": ["data=mnist", "model=dcgan", "train.batch_size=64"],
    "dcgan_small/mnist": ["data=mnist", "model=dcgan_small", "train.batch_size=64"],
    "dcgan_tiny/mnist": ["data=mnist", "model=dcgan_tiny", "train.batch_size=64"],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_seconds(trainer: Trainer, steps: int) -> float:
    """Time `steps` more rounds of the real training loop (its own training clock). The run
    is started once: later calls go on from where the last stopped, with the round it plays
    (a CUDA graph stays captured)."""
    if not hasattr(trainer, "steps"):
        trainer.start()
    trainer.steps = trainer.counters.step + steps
    before = trainer.counters.wall_s
    trainer.train()
    return trainer.counters.wall_s - before


def bare_seconds(G, D, data_images: torch.Tensor | None, toy, steps: int, batch: int,
                 z_dim: int, device: torch.device, lr: float, betas, impl: str) -> float:
    """The same GAN round written as plainly as PyTorch allows: everything drawn on the
    device, the same Adam kernel as the harness."""
    opt_g = make_adam(G.parameters(), impl, lr=lr, betas=betas)
    opt_d = make_adam(D.parameters(), impl, lr=lr, betas=betas)
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    modes = None if toy is None else toy.modes.to(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        if toy is not None:
            idx = torch.randint(len(modes), (batch,), generator=gen, device=device)
            real = modes[idx] + toy.std * torch.randn(batch, 2, generator=gen, device=device)
        else:
            idx = torch.randint(len(data_images), (batch,), generator=gen, device=device)
            real = data_images[idx].float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim, generator=gen, device=device))
        logits = D(torch.cat([real, fake])).adv
        loss_d = 0.5 * (F.binary_cross_entropy_with_logits(logits[:batch], ones)
                        + F.binary_cross_entropy_with_logits(logits[batch:], zeros))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        z = torch.randn(batch, z_dim, generator=gen, device=device)
        loss_g = 0.5 * F.softplus(-D(G(z)).adv).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    _sync(device)
    return time.perf_counter() - start


def syncs_per_round(trainer: Trainer, rounds: int = 5) -> float:
    """Would-be device syncs in a training round (ganlab.syncs; 0 is the target)."""
    with SyncCounter() as syncs:
        for _ in range(rounds):
            trainer.gan.train_step()
    return syncs.total / rounds


def bench_case(name: str, overrides: list[str], device: str, steps: int, repeats: int,
               workdir: Path) -> dict:
    cfg = compose(overrides + ["logger=none", f"train.device={device}", "train.progress=false",
                               "eval.every=0", "train.checkpoint_every=0",
                               f"train.log_every={10**9}", "eval.num_samples=64"])
    run_dir = workdir / name.replace("/", "_")
    trainer = Trainer(cfg, run_dir, ResultFile(run_dir / "result.json"))
    G, D = copy.deepcopy(trainer.gan.G), copy.deepcopy(trainer.gan.D)
    data = trainer.data
    toy = data if data.kind == "toy2d" else None
    images = None if toy else data.images
    t = cfg.train
    impl = trainer.result.data["host"]["optimizer_impl"]

    def bare(n: int) -> float:
        return bare_seconds(G, D, images, toy, n, t.batch_size, cfg.model.z_dim,
                            trainer.device, t.lr_g, tuple(t.betas_g), impl)

    harness_seconds(trainer, 5)  # warm-up both paths
    bare(5)
    harness, bares, bare_again = [], [], []
    for _ in range(repeats):
        harness.append(harness_seconds(trainer, steps) / steps)
        for times in (bares, bare_again):  # the second bare loop measures the noise floor
            times.append(bare(steps) / steps)
    h, b = statistics.median(harness), statistics.median(bares)
    row = {"case": name, "device": str(trainer.device), "harness_ms": 1e3 * h,
           "bare_ms": 1e3 * b, "ratio": h / b, "optimizer_impl": impl,
           "noise": statistics.median(bare_again) / b, "harness_steps": trainer.counters.step,
           "syncs_per_round": syncs_per_round(trainer)}
    graphs_cfg = cfg.copy()
    graphs_cfg.train.cuda_graphs = True
    if not uncapturable(graphs_cfg, trainer.device):  # the same loop with a graphed round
        graphed = Trainer(graphs_cfg, run_dir / "graphs", ResultFile(run_dir / "graphs.json"))
        harness_seconds(graphed, 5)  # warm-up and capture
        row["graphs_ms"] = 1e3 * statistics.median(
            harness_seconds(graphed, steps) / steps for _ in range(repeats))
    return row


class _FeatureHead(torch.nn.Module):
    """The classifier's penultimate features or logits, as torchmetrics expects a module."""

    def __init__(self, net: torch.nn.Module, logits: bool, num_features: int):
        super().__init__()
        self.net, self.logits, self.num_features = net, logits, num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, logits = self.net(x)
        return (logits if self.logits else feats).double()


def bench_eval(device: str, n: int, workdir: Path) -> dict:
    """Scoring n generated MNIST images: ganlab's evaluator (real side cached, features
    extracted once) vs torchmetrics' FID, KID and IS each extracting from images, both sides."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    from ganlab.data import load_split
    from ganlab.data.images import to_signed_unit
    from ganlab.evaluate.image_metrics import _quiet, fid, inception_score, kid, precision_recall

    cfg = compose(["data=mnist", "model=dcgan", "logger=none", f"train.device={device}",
                   "train.progress=false", f"eval.final_num_samples={n}",
                   f"eval.real_num_samples={n}"])
    trainer = Trainer(cfg, workdir / "eval", ResultFile(workdir / "eval" / "result.json"))
    evaluator = trainer.evaluator  # classifier and real features now cached
    gen = torch.Generator().manual_seed(0)
    samples = trainer.gan.generate(n, gen, 500)
    images, _ = load_split(cfg.data, cfg.eval.real_split)
    real = to_signed_unit(images[:n]).to(trainer.device)
    fake = samples.to(trainer.device)

    # The same three metrics on both sides (torchmetrics has no precision/recall; ours is
    # timed on its own below).
    ref = evaluator.reference
    start = time.perf_counter()
    feats, logits = evaluator.extractor(samples)
    fid(ref.features, feats)
    kid(ref.features, feats, subset_size=min(1000, n))
    inception_score(logits)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    precision_recall(ref.features, feats)
    pr_s = time.perf_counter() - start

    net = evaluator.extractor.net
    start = time.perf_counter()
    d = evaluator.reference.features.shape[1]
    # built on the device the images are on (torchmetrics keeps its states there)
    fid_m = FrechetInceptionDistance(feature=_FeatureHead(net, False, d)).to(trainer.device)
    kid_m = _quiet(KernelInceptionDistance, feature=_FeatureHead(net, False, d),
                   subset_size=min(1000, n)).to(trainer.device)
    is_m = _quiet(InceptionScore, feature=_FeatureHead(net, True, 10)).to(trainer.device)
    with torch.no_grad():
        for start_i in range(0, n, 500):
            r, f = real[start_i:start_i + 500], fake[start_i:start_i + 500]
            fid_m.update(r, real=True)
            fid_m.update(f, real=False)
            kid_m.update(r, real=True)
            kid_m.update(f, real=False)
            is_m.update(f)
        fid_m.compute()
        kid_m.compute()
        is_m.compute()
    naive = time.perf_counter() - start
    return {"case": f"eval {n} mnist", "device": str(trainer.device), "ours_s": ours,
            "naive_s": naive, "ratio": ours / naive, "pr_s": pr_s}


SWEEP_RUN = ["data=ring8", "train.steps=50", "eval.every=0", "eval.num_samples=500",
             "train.progress=false", "train.device=cpu"]


def _cli(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ganlab.train", *args], check=True,
                   capture_output=True, env={**os.environ, "WANDB_MODE": "offline"})
    return time.perf_counter() - start


def bench_sweep(n: int, workdir: Path) -> dict:
    """Per-run fixed cost, and n tiny runs through launchers vs one in-process loop."""
    from ganlab.train import run

    # A 1-step run in a fresh process: interpreter, imports, config, data, W&B init (offline),
    # one step, the final evaluation and checkpoint: all that a run costs besides training.
    overhead = statistics.median(
        _cli(["train.steps=1", *SWEEP_RUN[2:], f"hydra.run.dir={workdir}/o{i}"])
        for i in range(3))
    seeds = ",".join(str(i) for i in range(n))
    start = time.perf_counter()
    for i in range(n):
        run(compose([*SWEEP_RUN, "logger=none", f"seed={i}"]), workdir / f"loop{i}")
    loop = time.perf_counter() - start
    basic = _cli(["-m", f"seed={seeds}", *SWEEP_RUN, "logger=none",
                  f"hydra.sweep.dir={workdir}/basic"])
    joblib = _cli(["-m", "launcher=joblib", "fanout.n_jobs=2", f"seed={seeds}", *SWEEP_RUN,
                   "logger=none", f"hydra.sweep.dir={workdir}/joblib"])
    return {"overhead_s": overhead, "n": n, "loop_s": loop, "basic_s": basic,
            "joblib_s": joblib}


# every case can be packed (`make gpu-check` packs them all); image runs skip the feature
# classifier, whose training is not what packing measures
PACK_RUN = {case: [*overrides, *(["eval.features=none"] if "data=mnist" in overrides else [])]
            for case, overrides in CASES.items()}


def bench_packing(case: str, counts: list[int], steps: int, device: str, launcher: str,
                  workdir: Path) -> list[dict]:
    """Runs packed k at a time on one device through a launcher, for each k in `counts`:
    aggregate training throughput (rounds per second summed over runs, from each run's own
    training clock) relative to one run at a time."""
    rows = []
    for k in counts:
        seeds = ",".join(str(i) for i in range(k))
        parallel = ([f"fanout.runs_per_gpu={k}", f"fanout.n_jobs={k}"] if launcher == "local"
                    else [f"fanout.n_jobs={k}"])
        sweep = workdir / f"pack_{case.replace('/', '_')}_{launcher}_{k}"
        _cli(["-m", f"launcher={launcher}", *parallel, f"seed={seeds}", *PACK_RUN[case],
              f"train.steps={steps}", "eval.every=0", "eval.num_samples=100",
              "eval.grid_size=0", "train.checkpoint_every=0", f"train.device={device}",
              "train.progress=false", "logger=none", f"hydra.sweep.dir={sweep}"])
        records = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
        walls = [r["history"][-1]["wall_s"] for r in records]
        rows.append({"case": case, "launcher": launcher, "k": k, "runs": len(records),
                     "rounds_per_s": sum(steps / w for w in walls)})
    for r in rows:
        r["speedup"] = r["rounds_per_s"] / rows[0]["rounds_per_s"]
    return rows


def bench_threads(k: int, steps: int, workdir: Path) -> dict:
    """k ring8 runs at once through joblib, each with its thread budget (ganlab.cores: cores
    / k) against the same runs with torch's default (a thread per core each): the aggregate
    training rate, rounds per second summed over the runs from each run's own clock."""
    cores = available_cores()
    rates = {}
    for name, threads in (("budget", 0), ("default", cores)):
        sweep = workdir / f"threads_{name}_{k}"
        _cli(["-m", "launcher=joblib", f"fanout.n_jobs={k}", f"train.threads={threads}",
              f"seed={','.join(str(i) for i in range(k))}", *PACK_RUN["mlp/ring8"],
              f"train.steps={steps}", "eval.every=0", "eval.num_samples=100",
              "eval.grid_size=0", "train.checkpoint_every=0", "train.device=cpu",
              "train.progress=false", "logger=none", f"hydra.sweep.dir={sweep}"])
        records = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
        rates[name] = sum(steps / r["history"][-1]["wall_s"] for r in records)
        rates[f"{name}_threads"] = sorted({r["host"]["threads"] for r in records})
    return {"k": k, "cores": cores, **rates, "ratio": rates["budget"] / rates["default"]}


def bench_vectorized(case: str, sizes: list[int], steps: int, device: str) -> list[dict]:
    """Seeds trained as one stacked model (ganlab.vectorize), S at a time for each S in
    `sizes`: seed-rounds per second against one run's GAN stepping alone (the same GAN rounds
    without the loop's bookkeeping, which both would pay once per round)."""
    from ganlab.assemble import build_gan, resolve_device
    from ganlab.vectorize import SeedStack

    dev = resolve_device(device)

    def gans(n: int):
        out = [build_gan(compose([*CASES[case], "logger=none", f"train.device={device}",
                                  f"seed={i}"]), dev) for i in range(n)]
        for g in out:
            g.G.train()
            g.D.train()
        return out

    def rate(step, seeds: int) -> float:
        for _ in range(3):  # warm-up
            step()
        _sync(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(dev)
        return seeds * steps / (time.perf_counter() - start)

    alone = rate(gans(1)[0].train_step, 1)
    rows = []
    for size in sizes:
        stacked = rate(SeedStack(gans(size)).train_step, size)
        rows.append({"case": case, "S": size, "seed_rounds_per_s": stacked,
                     "alone_rounds_per_s": alone, "speedup": stacked / alone})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.bench", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--eval-samples", type=int, default=10000,
                        help="generated images for the evaluation line (0: skip it)")
    parser.add_argument("--sweep-runs", type=int, default=6,
                        help="tiny runs for the sweep line (0: skip it)")
    parser.add_argument("--pack", default="",
                        help="comma list of runs packed at once on the device, e.g. 1,4,8 "
                             "(empty: skip the packing lines)")
    parser.add_argument("--pack-launcher", default="joblib", choices=["joblib", "local"])
    parser.add_argument("--pack-steps", type=int, default=300)
    parser.add_argument("--vectorize", default="",
                        help="comma list of seeds stacked in one model, e.g. 1,8,32 (mlp "
                             "family only; empty: skip the vectorised lines)")
    parser.add_argument("--vectorize-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, metavar="K",
                        help="K ring8 runs at once with the thread budget against torch's "
                             "default threads (0: skip that line)")
    parser.add_argument("--threads-steps", type=int, default=300)
    parser.add_argument("--table", help="also write the closing table to this file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            try:
                rows.append(bench_case(name, CASES[name], args.device, args.steps,
                                       args.repeats, Path(tmp)))
            except ConfigError as e:
                print(f"{name}: skipped ({e})", file=sys.stderr)
                continue
            r = rows[-1]
            print(f"{r['case']:<12} {r['device']:<5} harness {r['harness_ms']:8.3f} ms/step   "
                  f"bare {r['bare_ms']:8.3f} ms/step   ratio {r['ratio']:.3f}   "
                  f"(bare/bare noise floor {r['noise']:.3f}; Adam {r['optimizer_impl']}; "
                  f"{r['syncs_per_round']:g} syncs per round)", flush=True)
            if "graphs_ms" in r:
                print(f"{r['case']:<12} {r['device']:<5} harness with CUDA graphs "
                      f"{r['graphs_ms']:8.3f} ms/step: {r['harness_ms'] / r['graphs_ms']:.2f}x "
                      "the eager harness", flush=True)
        eval_row = None
        if args.eval_samples:
            try:
                eval_row = bench_eval(args.device, args.eval_samples, Path(tmp))
                print(f"{eval_row['case']:<16} {eval_row['device']:<5} FID+KID+IS: ganlab (cached "
                      f"real side) {eval_row['ours_s']:.2f} s   torchmetrics recomputing both "
                      f"sides {eval_row['naive_s']:.2f} s   ratio {eval_row['ratio']:.3f}   "
                      f"(+ precision/recall {eval_row['pr_s']:.2f} s)", flush=True)
            except ConfigError as e:
                print(f"eval: skipped ({e})", file=sys.stderr)
        sweep_row = bench_sweep(args.sweep_runs, Path(tmp)) if args.sweep_runs else None
        if sweep_row:
            r = sweep_row
            print(f"sweep: fixed overhead per run {r['overhead_s']:.2f} s (target <= 2.5 s); "
                  f"{r['n']} tiny ring8 runs: one-process loop {r['loop_s']:.1f} s, "
                  f"basic launcher {r['basic_s']:.1f} s, joblib launcher (2 jobs) "
                  f"{r['joblib_s']:.1f} s", flush=True)
        packing = []
        if args.pack:
            counts = [int(k) for k in args.pack.split(",")]
            for name in args.cases:
                packing += bench_packing(name, counts, args.pack_steps, args.device,
                                         args.pack_launcher, Path(tmp))
                for r in packing[-len(counts):]:
                    print(f"pack {r['case']:<12} {r['launcher']:<7} {r['k']} at once: "
                          f"{r['rounds_per_s']:.1f} rounds/s summed over {r['runs']} runs, "
                          f"{r['speedup']:.2f}x one at a time", flush=True)
        threads_row = bench_threads(args.threads, args.threads_steps, Path(tmp)) \
            if args.threads else None
        if threads_row:
            r = threads_row
            print(f"threads: {r['k']} ring8 runs at once on {r['cores']} cores: "
                  f"{r['budget']:.1f} rounds/s summed with the budget ({r['budget_threads']} "
                  f"threads each), {r['default']:.1f} with torch's default "
                  f"({r['default_threads']} each): {r['ratio']:.2f}x", flush=True)
        vectorized = []
        if args.vectorize:
            sizes = [int(k) for k in args.vectorize.split(",")]
            vectorized = bench_vectorized("mlp/ring8", sizes, args.vectorize_steps,
                                          args.device)
            for r in vectorized:
                print(f"vectorized {r['case']:<10} S={r['S']:<3} {r['seed_rounds_per_s']:9.1f} "
                      f"seed-rounds/s vs {r['alone_rounds_per_s']:.1f} rounds/s alone: "
                      f"{r['speedup']:.2f}x", flush=True)
    table = []
    if rows:
        table.append("case          device  harness/bare  bare/bare  syncs/round  "
                     "(target <= 1.05, 0)")
        for r in rows:
            table.append(f"{r['case']:<13} {r['device']:<7} {r['ratio']:<13.3f} "
                         f"{r['noise']:<10.3f} {r['syncs_per_round']:<12g}"
                         f"{'' if r['ratio'] <= 1.05 else ' ABOVE TARGET'}".rstrip())
    for r in rows:
        if "graphs_ms" in r:
            table.append(f"{r['case'] + ' graphs':<13} {r['device']:<7} "
                         f"{r['graphs_ms'] / r['bare_ms']:<13.3f} (CUDA graphs on: harness/bare; "
                         f"{r['harness_ms'] / r['graphs_ms']:.2f}x the eager harness)")
    if eval_row:
        table.append(f"{eval_row['case']:<13} {eval_row['device']:<7} {eval_row['ratio']:.3f}  "
                     "(FID+KID+IS: ganlab evaluator / torchmetrics recomputing both sides)")
    if sweep_row:
        r = sweep_row
        table.append(f"{'sweep':<13} {'cpu':<7} {r['joblib_s'] / r['loop_s']:.3f}  (joblib "
                     f"launcher / one-process loop, {r['n']} runs; fixed overhead "
                     f"{r['overhead_s']:.2f} s/run)")
    for r in packing:
        table.append(f"{'pack ' + r['case']:<18} {args.device:<7} {r['speedup']:.2f}x  ({r['k']} "
                     f"runs at once through {r['launcher']}: summed rounds/s over one at a time)")
    if threads_row:
        r = threads_row
        table.append(f"{'threads':<13} {'cpu':<7} {r['ratio']:.2f}x  ({r['k']} runs at once: "
                     "summed rounds/s with the thread budget over torch's default threads; "
                     "target >= 1.8)")
    for r in vectorized:
        table.append(f"{'vectorized ' + r['case']:<21} {args.device:<7} {r['speedup']:.2f}x  "
                     f"(S={r['S']} seeds stacked: seed-rounds/s over one run alone)")
    print("\n" + "\n".join(table))
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text("\n".join(table) + "\n")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
