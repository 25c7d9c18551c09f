# %% [markdown]
# ## Settings
# The defaults are the competition's. Environment variables override them, so the same notebook
# runs locally on a stub folder (`python -m data_stubs make DIR`):
# `UNLEARN_INPUT_DIR`, `UNLEARN_TMP_DIR`, `UNLEARN_WORK_DIR` (folders), `UNLEARN_N` (number of
# checkpoints), `UNLEARN_TIME_LIMIT_H` (the notebook's run-time limit, hours),
# `UNLEARN_SAFETY_FRACTION` (share of that limit kept for loading, zipping and slack),
# `UNLEARN_MAX_RUN_S` (optional cap on one unlearning call), `UNLEARN_SEED` (seed of run 0),
# `UNLEARN_CUTOFF` (the organisers' cut-off, a share of one retraining: each unlearning call is
# granted at most that share, less a tenth, of one retraining as timed here; 0 turns it off),
# `UNLEARN_ALLOW_CPU=1` (run without a GPU: local tests only).

# %%
import csv
import hashlib
import inspect
import io
import json
import os
import random
import time
import zipfile

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import read_image
from torchvision.models import resnet18

NOTEBOOK_START = time.time()  # the run-time limit counts from the start of the notebook
INPUT_DIR = os.environ.get("UNLEARN_INPUT_DIR", "/kaggle/input/neurips-2023-machine-unlearning")
TMP_DIR = os.environ.get("UNLEARN_TMP_DIR", "/kaggle/tmp")
WORK_DIR = os.environ.get("UNLEARN_WORK_DIR", os.getcwd())  # on Kaggle: /kaggle/working
N_RUNS = int(os.environ.get("UNLEARN_N", "512"))
TIME_LIMIT_H = float(os.environ.get("UNLEARN_TIME_LIMIT_H", "8"))
SAFETY_FRACTION = float(os.environ.get("UNLEARN_SAFETY_FRACTION", "0.1"))
MAX_RUN_S = float(os.environ.get("UNLEARN_MAX_RUN_S", "0")) or None
CUTOFF = float(os.environ.get("UNLEARN_CUTOFF", "0.2"))  # the organisers' stated fraction
CUTOFF_MARGIN = 0.9  # grant at most 90% of the cut-off: a run may overshoot what it is granted
RETRAIN_EPOCHS = 30  # the organisers' retraining recipe (Adam 1e-4, 30 epochs)
SEED = int(os.environ.get("UNLEARN_SEED", "0"))
ALLOW_CPU = os.environ.get("UNLEARN_ALLOW_CPU", "0") == "1"
BATCH_SIZE = 64  # the organisers' template
NUM_CLASSES = 10  # age groups
MIN_BUDGET_S = 1.0  # never grant an unlearning call less than this

# %%
# As in the organisers' template, refuse to run without a GPU, in mock mode too: a notebook
# saved without an accelerator would fail in the scoring run, so fail now.
if torch.cuda.is_available():
    DEVICE = torch.device("cuda")
elif ALLOW_CPU:
    DEVICE = torch.device("cpu")
    print("No GPU: running on the CPU because UNLEARN_ALLOW_CPU=1 (for local tests only).")
else:
    raise RuntimeError(
        "No GPU found. Add an accelerator to the notebook (the organisers recommend the P100): "
        "the scoring run fails without one. Set UNLEARN_ALLOW_CPU=1 to run on the CPU anyway."
    )


def is_mock_input(input_dir):
    """True for the public copy of the data (only ``empty.txt``): then nothing heavy runs."""
    has_data = os.path.exists(os.path.join(input_dir, "retain.csv"))
    if not has_data and not os.path.exists(os.path.join(input_dir, "empty.txt")):
        raise FileNotFoundError(
            f"{input_dir} holds neither retain.csv nor empty.txt: attach the competition data "
            "(or point UNLEARN_INPUT_DIR at a folder made by `python -m data_stubs make`)"
        )
    return not has_data


MOCK = is_mock_input(INPUT_DIR)
print(f"input {INPUT_DIR} ({'mock: only empty.txt' if MOCK else 'competition data'}), "
      f"device {DEVICE}, {N_RUNS} runs, time limit {TIME_LIMIT_H} h")

# %%
class UnlearningDataset(Dataset):
    """One split (``retain``, ``forget`` or ``validation``) read into memory once.

    Items are dicts as in the organisers' template: ``image`` (3, 32, 32) float32 in 0..255
    (no normalisation), ``image_id`` (str), ``age_group``, ``age``, ``person_id`` (ints).
    """

    def __init__(self, input_dir, split):
        with open(os.path.join(input_dir, f"{split}.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{split}.csv in {input_dir} has no examples")
        self.examples = [self._load(input_dir, row) for row in rows]

    @staticmethod
    def _load(input_dir, row):
        part1, part2 = row["image_id"].split("-", 1)  # images/<part1>/<part2>.png
        image = read_image(os.path.join(input_dir, "images", part1, f"{part2}.png"))
        return {
            "image": image.to(torch.float32),
            "image_id": row["image_id"],
            "age_group": int(row["age_group"]),
            "age": int(row["age"]),
            "person_id": int(row["person_id"]),
        }

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, idx):
        return self.examples[idx]


def make_loaders(input_dir):
    """Retain, forget and validation loaders: batch size 64, shuffled, like the template."""
    return tuple(
        DataLoader(UnlearningDataset(input_dir, split), batch_size=BATCH_SIZE, shuffle=True)
        for split in ("retain", "forget", "validation")
    )

# %%
class RunBudget:
    """Seconds each unlearning call may take so that all ``n_runs`` runs end by ``deadline``.

    Before each run: budget = (time left) / (runs left) - (per-run overhead), divided by the
    method's overrun ratio. The overhead (loading the original model, saving a checkpoint) and
    the ratio (seconds taken / seconds granted, at least 1) are measured on the runs done so
    far. A run that overshoots leaves less time, so later budgets shrink: the method adapts up
    front instead of the notebook timing out before its last checkpoint (which scores nothing).
    """

    def __init__(self, deadline, n_runs, *, max_run_s=None):
        self.deadline = deadline  # time.time() by which every run must be done
        self.n_runs = n_runs
        self.max_run_s = max_run_s
        self.done = 0
        self.overhead_s = 0.0
        self.overrun = 1.0

    def next_budget(self):
        share = (self.deadline - time.time()) / (self.n_runs - self.done)
        budget = (share - self.overhead_s) / self.overrun
        if self.max_run_s:
            budget = min(budget, self.max_run_s)
        if budget < MIN_BUDGET_S:
            print(f"warning: only {budget:.2f} s left per run; granting {MIN_BUDGET_S} s, "
                  "so the notebook may exceed its time limit")
        return max(budget, MIN_BUDGET_S)

    def record(self, *, granted_s, unlearn_s, total_s):
        self.done += 1
        self.overhead_s = max(self.overhead_s, total_s - unlearn_s)
        # Smoothed, and not from the first run: its one-off costs (CUDA warm-up) only use up
        # time left, they must not shrink every later budget.
        if self.done > 1:
            ratio = max(unlearn_s / granted_s, 1.0)
            self.overrun = 0.7 * self.overrun + 0.3 * ratio


def time_retraining_epoch(retain_loader):
    """Seconds of one epoch of the organisers' retraining (a fresh ResNet-18, Adam at 1e-4 with
    weight decay 5e-3, cross-entropy, over the retain loader) on this machine, after two
    untimed warm-up steps (CUDA start-up is no part of a retraining). Its optimiser and
    weights are thrown away; the random streams are restored."""
    with torch.random.fork_rng(devices=[DEVICE] if DEVICE.type == "cuda" else []):
        net = resnet18(weights=None, num_classes=NUM_CLASSES).to(DEVICE).train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=5e-3)

        def step(batch):
            x, y = batch["image"].to(DEVICE), batch["age_group"].to(DEVICE)
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()

        for i, batch in enumerate(retain_loader):
            if i == 2:
                break
            step(batch)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in retain_loader:
            step(batch)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()  # the epoch's queued GPU work is part of its time
        return time.perf_counter() - start


def cutoff_cap(retain_loader):
    """The most seconds one unlearning call is granted under the organisers' cut-off (a share
    ``CUTOFF`` of one retraining of ``RETRAIN_EPOCHS`` epochs, timed here, less the margin),
    or ``None`` when ``UNLEARN_CUTOFF`` is 0. An unlearning slower than the cut-off is not
    scored, so no time limit should buy a longer one."""
    if CUTOFF <= 0:
        return None
    epoch_s = time_retraining_epoch(retain_loader)
    cap = CUTOFF_MARGIN * CUTOFF * RETRAIN_EPOCHS * epoch_s
    print(f"one retraining here: about {RETRAIN_EPOCHS * epoch_s:.1f} s ({epoch_s:.2f} s an "
          f"epoch); each unlearning call gets at most {cap:.1f} s ({CUTOFF_MARGIN:.0%} of the "
          f"{CUTOFF:.0%} cut-off)")
    return cap


def accepts_budget(fn):
    """Whether ``fn`` takes a ``budget_s`` keyword (the kit's methods do; a user's may not)."""
    params = inspect.signature(fn).parameters.values()
    return any(p.name == "budget_s" or p.kind is p.VAR_KEYWORD for p in params)


def seed_run(seed):
    """Seed every generator a run may use: runs differ from each other but are repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may use the legacy global generator)
    torch.manual_seed(seed)  # CPU and every GPU


def checkpoint_path(i):
    return os.path.join(TMP_DIR, f"unlearned_checkpoint_{i}.pth")


def check_checkpoints(n_runs):
    """The paths of exactly ``n_runs`` checkpoints, or an error saying what is wrong."""
    expected = {os.path.basename(checkpoint_path(i)) for i in range(n_runs)}
    found = {f for f in os.listdir(TMP_DIR)
             if f.startswith("unlearned_checkpoint_") and f.endswith(".pth")}
    if found != expected:
        missing, unexpected = sorted(expected - found)[:5], sorted(found - expected)[:5]
        raise RuntimeError(f"expected exactly {n_runs} checkpoints in {TMP_DIR}; "
                           f"missing {missing}, unexpected {unexpected}")
    return [checkpoint_path(i) for i in range(n_runs)]


def returned_model(out, net, i):
    """The model run ``i`` produced: what ``unlearning`` returned, or ``net`` (changed in
    place) when it returned ``None``; the kit's evaluator and runner take the same one, so the
    checkpoints are the models they score. It must be a ResNet-18 of the original's keys."""
    model = net if out is None else out
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"unlearning() returned a {type(out).__name__} in run {i}: return "
                        "nothing (change net in place) or the unlearned torch model")
    keys, expected = set(model.state_dict()), set(net.state_dict())
    if keys != expected:
        raise ValueError(f"unlearning() returned a model of other weights in run {i} "
                         f"(e.g. {sorted(keys ^ expected)[:3]}): return a ResNet-18 like net")
    return model


def save_checkpoint(net, path):
    """Save ``net``'s state dict (on the CPU) to ``path``; returns the sha256 of the bytes
    written, hashed in memory rather than by reading the file back."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path, original, records):
    """``manifest.json`` beside the zip: each checkpoint's sha256 and its unlearning seconds,
    and the original's sha256. The zip holds the checkpoints only, as the template's does;
    the kit's evaluator (``python -m local_eval --checkpoints submission.zip``) reads this file
    for the seconds per run and refuses checkpoints scored against another original."""
    manifest = {"written_by": "kaggle notebook", "n": len(records),
                "original_sha256": file_sha256(original), "checkpoints": records}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, path)  # never a half-written manifest


def zip_checkpoints(paths, zip_path):
    """Zip like the template's `zip submission.zip /kaggle/tmp/*.pth`: members are named by
    their absolute path without the leading '/'. Stored, not deflated: weights barely compress
    and deflating 512 checkpoints costs minutes."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in paths:
            zf.write(os.path.abspath(path))


def write_empty_submission(zip_path):
    """Mock mode: an empty (but valid) submission.zip, nothing else."""
    zipfile.ZipFile(zip_path, "w").close()


def remove_stale_checkpoints():
    """Checkpoints left by an earlier run would break the count check."""
    for f in os.listdir(TMP_DIR):
        if f.startswith("unlearned_checkpoint_") and f.endswith(".pth"):
            os.remove(os.path.join(TMP_DIR, f))


def run_all(unlearn_fn):
    """The competition's loop: N_RUNS times, load the original model into a fresh ResNet-18,
    unlearn, save the state dict; then check the count and write submission.zip."""
    retain_loader, forget_loader, val_loader = make_loaders(INPUT_DIR)
    os.makedirs(TMP_DIR, exist_ok=True)
    remove_stale_checkpoints()
    original = os.path.join(INPUT_DIR, "original_model.pth")
    deadline = NOTEBOOK_START + TIME_LIMIT_H * 3600 * (1 - SAFETY_FRACTION)
    caps = [c for c in (MAX_RUN_S, cutoff_cap(retain_loader)) if c]
    budget = RunBudget(deadline, N_RUNS, max_run_s=min(caps) if caps else None)
    takes_budget = accepts_budget(unlearn_fn)
    if not takes_budget:
        print("unlearning() takes no budget_s: its run time cannot be adapted to the limit")
    records = {}
    for i in range(N_RUNS):
        start = time.perf_counter()  # durations on the monotonic clock, the deadline on time()
        seed_run(SEED + i)
        net = resnet18(weights=None, num_classes=NUM_CLASSES)
        net.load_state_dict(torch.load(original, map_location=DEVICE, weights_only=True))
        net.to(DEVICE)
        granted_s = budget.next_budget()
        unlearn_start = time.perf_counter()
        if takes_budget:
            out = unlearn_fn(net, retain_loader, forget_loader, val_loader, budget_s=granted_s)
        else:
            out = unlearn_fn(net, retain_loader, forget_loader, val_loader)
        unlearn_s = time.perf_counter() - unlearn_start
        sha256 = save_checkpoint(returned_model(out, net, i), checkpoint_path(i))
        records[str(i)] = {"file": os.path.basename(checkpoint_path(i)), "sha256": sha256,
                           "seconds": round(unlearn_s, 4)}
        budget.record(granted_s=granted_s, unlearn_s=unlearn_s, total_s=time.perf_counter() - start)
        if i < 3 or (i + 1) % max(1, N_RUNS // 16) == 0 or i + 1 == N_RUNS:
            left_min = (deadline - time.time()) / 60
            print(f"run {i + 1}/{N_RUNS}: unlearning took {unlearn_s:.1f} s "
                  f"(granted {granted_s:.1f} s); {left_min:.1f} min left before the deadline")
    zip_path = os.path.join(WORK_DIR, "submission.zip")
    zip_checkpoints(check_checkpoints(N_RUNS), zip_path)
    write_manifest(os.path.join(WORK_DIR, "manifest.json"), original, records)
    minutes = (time.time() - NOTEBOOK_START) / 60
    print(f"wrote {zip_path} with {N_RUNS} checkpoints; notebook time {minutes:.1f} min")
