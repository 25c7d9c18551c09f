"""Benchmark: what an evaluation at N = 512 costs, measured through the shard mechanism.

    python -m bench.scale [--n-models 512] [--shards 64] [--method NAME (default: the kit's)]

Training the 4N = 2048 jobs of N = 512 takes long on a small CPU, so this measures what it
can and says how the rest scales, all in one run:

1. a real shard: ``python -m local_eval shard --shard 0/K`` of the N-model evaluation on
   digits (default recipe, no cache, one process, one thread): seconds per training and per
   unlearning run, and the shard process's peak RSS. Every shard is the same size (4N/K
   jobs), so K of them take K times its seconds in total, on K machines or one;
2. the parts that grow with N: the other K - 1 shard folders are made from the real
   shard's records (each record a copy with its own small noise on the logits, so the
   scorer sees 4N distinct models), and ``python -m local_eval merge`` of all K, as a user
   runs it, in a fresh process: seconds and peak RSS of reading 4N records, assembling
   the signals, scoring (N x E), the bootstrap, the sanity check and the plots; the same
   merge at N = 32 (the default) for the ratio, and the peak RSS of a process that only
   imports what merge imports (the floor any of them pays).

Peak RSS: each child process's own high-water mark (``bench.memory.high_water_mb``), in MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from local_eval.runs.jobs import Shard, evaluation_jobs
from local_eval.runs.shards import read_shard, write_shard

# A child runs one command line of python -m local_eval in-process and reports its peak RSS.
CHILD = """
import json, sys, time
start = time.perf_counter()
if sys.argv[2:3] == ["--imports-only"]:
    import local_eval.cli.shards, local_eval.reporting.report, local_eval.reporting.plots
    import sklearn.linear_model
    import matplotlib.pyplot
    code = 0
else:
    from local_eval.cli.main import main
    code = main(sys.argv[2:])
seconds = time.perf_counter() - start
from bench.memory import high_water_mb
rss_mb = high_water_mb()[0]  # this process's own peak (ru_maxrss would count the parent's)
json.dump({"code": code, "seconds": seconds, "rss_mb": rss_mb}, open(sys.argv[1], "w"))
"""


def child(argv: list[str], tmp: Path) -> dict:
    """Run ``python -m local_eval ARGV`` in a fresh process; its code, seconds, peak RSS."""
    out = tmp / f"child-{time.monotonic_ns()}.json"
    subprocess.run(
        [sys.executable, "-c", CHILD, str(out), *argv], check=True, stdout=subprocess.DEVNULL
    )
    res = json.loads(out.read_text())
    if res["code"] != 0:
        raise SystemExit(f"python -m local_eval {' '.join(argv)} failed ({res['code']})")
    return res


def synthetic_shards(real: Path, n_models: int, count: int, root: Path) -> list[Path]:
    """``count`` shard folders of an ``n_models`` evaluation whose records are copies of the
    real shard's (same role, cycled), each with its own noise (sd 0.05) on the logits."""
    part, _ = read_shard(real)
    config = dataclasses.replace(part.config, n_models=n_models)
    by_role: dict[str, list] = {}
    for job, record in part.records.items():
        by_role.setdefault(job.role, []).append(record)
    rng = np.random.default_rng(0)
    folders = []
    for i in range(count):
        shard = Shard(i, count)
        records = {}
        for job in shard.select(evaluation_jobs(n_models)):
            source = by_role[job.role][job.index % len(by_role[job.role])]
            noise = rng.normal(0.0, 0.05, source.forget_logits.shape).astype(np.float32)
            records[job] = dataclasses.replace(source, forget_logits=source.forget_logits + noise)
        fake = dataclasses.replace(part, config=config, shard=shard, records=records)
        folders += write_shard(fake, root / f"n{n_models}-s{i}", command=["(synthetic)"])[:1]
    return [f.parent for f in folders]


def run(*, n_models: int = 512, shards: int = 64, method: str | None = None) -> dict:
    import submission

    method = method or submission.DEFAULT_METHOD
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name:
        tmp = Path(name)
        # on the CPU even where a GPU is: the projection is "all jobs on one core"
        common = ["--n-models", str(n_models), "--method", method, "--workers", "1",
                  "--threads", "1", "--device", "cpu", "--quiet", "--no-cache"]  # fmt: skip
        real_dir = tmp / "real"
        real = child(["shard", "--shard", f"0/{shards}", *common, "--out", str(real_dir)], tmp)
        part, manifest = read_shard(real_dir)
        trained = sum(manifest["models_trained"].values())
        runs = sum(job.role == "unlearning" for job in part.records)
        unlearn_s = float(np.mean([part.records[j].seconds for j in part.records
                                   if j.role == "unlearning"]))  # fmt: skip
        train_s = manifest["stage_seconds"]["references"] + manifest["stage_seconds"]["original"]
        per_training = train_s / trained

        merges = {}
        for n, count in ((32, 4), (n_models, shards)):
            folders = synthetic_shards(real_dir, n, count, tmp / "fake")
            merges[n] = child(["merge", *map(str, folders), "--out", str(tmp / f"run-{n}")], tmp)
            report = json.loads((tmp / f"run-{n}" / "report.json").read_text())
            merges[n]["examples"] = report["n_forget_examples"]
        imports = child(["--imports-only"], tmp)
        first = next(iter(part.records.values()))
        record_bytes = sum(a.nbytes for a in first.to_arrays().values())

    jobs = 4 * n_models
    return {
        "n_models": n_models,
        "shards": shards,
        "method": method,
        "shard_jobs": len(part.records),
        "shard_seconds": real["seconds"],
        "shard_rss_mb": real["rss_mb"],
        "seconds_per_training": per_training,
        "seconds_per_run": unlearn_s,
        "runs_in_shard": runs,
        # 3N trainings (2N retrained, N originals) + the original, and N runs
        "projected_cpu_hours": ((3 * n_models + 1) * per_training + n_models * unlearn_s) / 3600,
        "merge": merges,
        "imports_rss_mb": imports["rss_mb"],
        "record_kb": record_bytes / 1024,
        "records_mb": jobs * record_bytes / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--n-models", type=int, default=512)
    parser.add_argument("--shards", type=int, default=64, help="K (the real shard is 0/K)")
    parser.add_argument("--method", default=None, help="default: the kit's default method")
    args = parser.parse_args(argv)
    res = run(n_models=args.n_models, shards=args.shards, method=args.method)
    n, big, small = res["n_models"], res["merge"][res["n_models"]], res["merge"][32]
    print(f"scale: digits, N = {n} ({4 * n} jobs), {res['method']}, one process, one thread")
    print(
        f"  real shard 0/{res['shards']}: {res['shard_jobs']} jobs in {res['shard_seconds']:.1f} s"
        f" (a training {res['seconds_per_training']:.2f} s, an unlearning run "
        f"{res['seconds_per_run']:.2f} s), peak RSS {res['shard_rss_mb']:.0f} MB"
    )
    print(f"  all {4 * n} jobs on one such core: {res['projected_cpu_hours']:.2f} h "
          f"(projected from the shard; K machines: / K)")  # fmt: skip
    print(f"  a record: {res['record_kb']:.1f} KB; all {4 * n}: {res['records_mb']:.1f} MB")
    for size, m in ((32, small), (n, big)):
        print(
            f"  merge at N = {size:>3} (E = {m['examples']}): {m['seconds']:6.1f} s, peak RSS "
            f"{m['rss_mb']:.0f} MB"
        )
    print(f"  imports alone: peak RSS {res['imports_rss_mb']:.0f} MB; merge at N = {n} over it: "
          f"{big['rss_mb'] - res['imports_rss_mb']:.0f} MB, at N = 32: "
          f"{small['rss_mb'] - res['imports_rss_mb']:.0f} MB")  # fmt: skip
    print(f"  ratio N = {n} / N = 32: seconds {big['seconds'] / small['seconds']:.1f}x, "
          f"peak RSS {big['rss_mb'] / small['rss_mb']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
