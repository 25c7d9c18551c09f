"""Bad input at every command-line entry point, table-driven.

Each case hands one entry point something wrong (a missing or unreadable path, a broken CSV,
image or checkpoint, an impossible size or budget, an unknown method, a submission that
raises, hangs or produces NaN) and checks the kit's promise:

- the exit status is not zero;
- stderr holds exactly one ``error:`` line, saying what is wrong (the expected words) and no
  traceback (tracebacks only with ``--debug``);
- nothing is left behind: the output (folder or file) is absent, no temporary or lock file
  beside it.

Entry points run in-process through their ``main(argv)``: ``python -m local_eval``,
``python -m local_eval score``, ``python -m submission.run``, ``python -m submission.profile``,
``python -m notebooks`` and ``python -m data_stubs``. What the kit does with a submission that
hangs: ``submission.run`` interrupts a run still going when the job budget (``--budget-h``) is
spent and stops with exit status 3; ``local_eval`` scores runs that merely overrun
``--budget-s`` (and reports them) but interrupts one still going after ``--run-timeout-s``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_stubs.__main__ import main as data_stubs_main
from data_stubs.make import StubConfig, make_stub
from local_eval.cli.main import main as local_eval_main
from local_eval.training.models import build_model
from notebooks.__main__ import main as notebooks_main
from submission.profile import main as profile_main
from submission.run import main as run_main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

ENTRY_POINTS = {
    "local_eval": local_eval_main,
    "score": lambda argv: local_eval_main(["score", *argv]),
    "shard": lambda argv: local_eval_main(["shard", *argv]),
    "merge": lambda argv: local_eval_main(["merge", *argv]),
    "run": run_main,
    "profile": profile_main,
    "notebooks": notebooks_main,
    "data_stubs": data_stubs_main,
}


# ------------------------------------------------------------------------------ the world
class World:
    """Files the cases point at, made once per module (tiny: digits, N = 2, a 6-person stub)."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.afile = root / "a-regular-file"
        self.afile.write_text("not a folder\n")
        torch.manual_seed(0)
        state = build_model("smallcnn", num_classes=10, in_channels=1, image_size=8).state_dict()
        self.orig = self._save("orig.pth", state)
        first = next(iter(state))
        self.nan = self._save("nan.pth", {**state, first: torch.full_like(state[first], np.nan)})
        self.inf = self._save("inf.pth", {**state, first: torch.full_like(state[first], np.inf)})
        self.extra = self._save("extra.pth", {**state, "head.bogus": torch.zeros(3)})
        self.missing_key = self._save("missing.pth", {k: v for k, v in state.items() if k != first})
        self.shape = self._save("shape.pth", {**state, first: torch.zeros(2, 2)})
        self.not_dict = self._save("list.pth", [torch.zeros(1)])
        self.text_pth = root / "text.pth"
        self.text_pth.write_text("this is not a checkpoint\n")
        self.a_dir = root / "a-folder.pth"
        self.a_dir.mkdir()
        self.unreadable = self._unreadable()
        subs = {
            "raise.py": "def unlearning(net, retain, forget, val):\n"
            "    raise RuntimeError('boom in unlearning')\n",
            "nan.py": "import torch\n\ndef unlearning(net, retain, forget, val):\n"
            "    with torch.no_grad():\n"
            "        for p in net.parameters():\n"
            "            p.fill_(float('nan'))\n"
            "    return net\n",
            "hang.py": "import time\n\ndef unlearning(net, retain, forget, val):\n"
            "    try:\n        time.sleep(120)\n    except Exception:\n        pass\n"
            "    return net\n",
            "nodef.py": "def helper():\n    pass\n",
            "syntax.py": "def unlearning(net, retain, forget, val)\n    return net\n",
            "import_error.py": "import no_such_module_anywhere\n",
        }
        for name, text in subs.items():
            (root / name).write_text(text)
        (root / "not_json.json").write_text("{not json")
        self.base_stub = make_stub(
            root / "stub",
            StubConfig(
                n_persons=6, n_forget_persons=1, n_val_persons=2, images_per_person=2, epochs=0
            ),
        )
        self.arrays()

    def shard(self, name: str) -> Path:
        """A shard folder of a tiny evaluation (made on first use): ``s0``, ``s1``: shards
        0/2 and 1/2; ``t1``: 1/2 with another recipe; ``u1``: 1/3."""
        folder = self.root / "shards" / name
        if not folder.exists():
            which, extra = SHARDS[name]
            argv = ["shard", "--shard", which, *QUICK_SHARD, *extra, "--out", str(folder)]
            assert local_eval_main(argv) == 0, name
        return folder

    def _save(self, name: str, obj) -> Path:
        torch.save(obj, self.root / name)
        return self.root / name

    def _unreadable(self) -> Path:
        """A path that exists but cannot be read: mode 000, or (root ignores modes) a folder
        standing where a file is expected."""
        if IS_ROOT:
            path = self.root / "unreadable.pth"
            path.mkdir()
        else:
            path = self._save("unreadable.pth", {"w": torch.zeros(1)})
            path.chmod(0)
        return path

    def arrays(self) -> None:
        rng = np.random.default_rng(0)
        save = np.save
        save(self.root / "u.npy", rng.random((4, 5)))
        save(self.root / "r.npy", rng.random((4, 5)))
        save(self.root / "r6.npy", rng.random((4, 6)))
        save(self.root / "one.npy", rng.random((1, 5)))
        save(self.root / "flat.npy", rng.random(5))
        save(self.root / "words.npy", np.array(["a", "b"]))
        with_nan = rng.random((4, 5))
        with_nan[0, 0] = np.nan
        save(self.root / "nan.npy", with_nan)
        save(self.root / "logits.npy", rng.random((4, 5, 3)))
        save(self.root / "targets_bad.npy", np.array([0, 1, 7, 0, 1]))
        np.savez(self.root / "wrong_keys.npz", something=rng.random((4, 5)))

    def kaggle(self, mutation: str) -> Path:
        """A copy of the stub competition folder with one thing broken."""
        folder = self.root / f"kaggle-{mutation}"
        if folder.exists():
            return folder
        shutil.copytree(self.base_stub, folder)
        MUTATIONS[mutation](folder)
        return folder

    def p(self, name: str) -> str:
        return str(self.root / name)


def _rewrite_csv(path: Path, change) -> None:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    rows = change(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _first_image(folder: Path) -> Path:
    with (folder / "retain.csv").open(newline="") as f:
        image_id = next(csv.DictReader(f))["image_id"]
    part1, part2 = image_id.split("-", 1)
    return folder / "images" / part1 / f"{part2}.png"


MUTATIONS = {
    "no-age-column": lambda d: _rewrite_csv(
        d / "retain.csv", lambda rows: [[r[0], r[1], r[3]] for r in rows]
    ),
    "unknown-label": lambda d: _rewrite_csv(
        d / "retain.csv", lambda rows: [rows[0], [rows[1][0], "12", *rows[1][2:]], *rows[2:]]
    ),
    "label-not-a-number": lambda d: _rewrite_csv(
        d / "forget.csv", lambda rows: [rows[0], [rows[1][0], "old", *rows[1][2:]], *rows[2:]]
    ),
    "empty-forget": lambda d: _rewrite_csv(d / "forget.csv", lambda rows: rows[:1]),
    "overlap": lambda d: _rewrite_csv(
        d / "forget.csv", lambda rows: [*rows, _rows(d / "retain.csv")[1]]
    ),
    "no-forget-csv": lambda d: (d / "forget.csv").unlink(),
    "missing-image": lambda d: _first_image(d).unlink(),
    "small-image": lambda d: Image.new("RGB", (16, 16)).save(_first_image(d)),
    "grey-image": lambda d: Image.new("L", (32, 32)).save(_first_image(d)),
    "not-an-image": lambda d: _first_image(d).write_bytes(b"not a png at all"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("bad-input"))


# ------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Case:
    id: str
    entry: str
    argv: object  # World -> list of str (the output arguments are added by the test)
    expect: str  # words the error line must hold
    out: str = "dir"  # "dir": --out FOLDER; "file": --out FILE.ipynb; "stub": a positional DIR
    # "none": no output argument


QUICK_LE = ["--n-models", "2", "--epochs", "1", "--workers", "1", "--quiet"]
# a fixed budget: without a shared cache each shard would time its own original for "auto"
QUICK_SHARD = [*QUICK_LE, "--method", "finetune", "--no-cache", "--budget-s", "none"]
SHARDS = {"s0": ("0/2", []), "s1": ("1/2", []), "t1": ("1/2", ["--epochs", "2"]),
          "u1": ("1/3", [])}  # fmt: skip
DIGITS_RUN = ["--data", "digits", "--arch", "smallcnn", "--n", "2", "--budget-s", "0.2"]


def le(*args):
    """A local_eval case: quick settings, then ``args`` (callables get the world)."""
    return lambda w: [*QUICK_LE, "--cache-dir", str(w.cache), *_expand(w, args)]


def run(*args, original="orig"):
    """A submission.run case on digits; ``original``: a World attribute or a callable."""

    def argv(w):
        path = original(w) if callable(original) else getattr(w, original)
        return [*DIGITS_RUN, "--original", str(path), *_expand(w, args)]

    return argv


def sh(*args):
    """A shard case: quick settings, then ``args``."""
    return lambda w: [*QUICK_SHARD, "--cache-dir", str(w.cache), *_expand(w, args)]


def shards(*names):
    """A merge case: the World's shard folders ``names``."""
    return lambda w: [str(w.shard(name)) for name in names]


def raw(*args):
    return lambda w: _expand(w, args)


def _expand(w: World, args) -> list[str]:
    return [str(a(w)) if callable(a) else str(a) for a in args]


def kag(mutation):
    return lambda w: f"kaggle:{w.kaggle(mutation)}"


def f(name):
    return lambda w: w.p(name)


CASES = [
    # --- python -m local_eval: options
    Case("le-n0", "local_eval", le("--n-models", "0"), "n_models must be at least 2"),
    Case("le-hp-type", "local_eval", le("--method", "relearn", "--hp", "lr=abc"),
         "relearn's lr takes float"),
    Case("le-n1", "local_eval", le("--n-models", "1"), "n_models must be at least 2"),
    Case("le-neg-budget", "local_eval", le("--budget-s", "-1"), "budget_s must be positive"),
    Case("le-nan-budget", "local_eval", le("--budget-s", "nan"), "budget_s must be positive"),
    Case("le-neg-timeout", "local_eval", le("--run-timeout-s", "-5"), "--run-timeout-s"),
    Case("le-neg-epochs", "local_eval", le("--epochs", "-1"), "epochs >= 1"),
    Case("le-zero-lr", "local_eval", le("--lr", "0"), "lr > 0"),
    Case("le-workers0", "local_eval", le("--workers", "0"), "workers must be a positive"),
    Case("le-device", "local_eval", le("--device", "tpu"), "unknown device 'tpu'"),
    Case("le-arch", "local_eval", le("--arch", "transformer"), "transformer"),
    Case("le-recipe", "local_eval", le("--recipe", "nope"), "nope"),
    Case("le-forget-0", "local_eval", le("--forget", "random:0"), "fraction must be in (0, 1)"),
    Case("le-forget-class", "local_eval", le("--forget", "class:10"), "forget class 10"),
    Case("le-forget-junk", "local_eval", le("--forget", "everything"), "bad forget spec"),
    Case("le-dataset", "local_eval", le("--dataset", "imagenet"), "unknown dataset 'imagenet'"),
    Case("le-method", "local_eval", le("--method", "nope"), "unknown method 'nope'"),
    Case("le-two-sources", "local_eval", le("--method", "finetune", "--submission",
                                            f("raise.py")), "at most one"),
    # --- python -m local_eval: paths and files
    Case("le-sub-missing", "local_eval", le("--submission", f("none.py")),
         "submission file not found"),
    Case("le-sub-unreadable", "local_eval", le("--submission", lambda w: w.unreadable),
         "submission file"),
    Case("le-sub-nodef", "local_eval", le("--submission", f("nodef.py")),
         "defines no function 'unlearning'"),
    Case("le-sub-syntax", "local_eval", le("--submission", f("syntax.py")), "syntax error"),
    Case("le-sub-import", "local_eval", le("--submission", f("import_error.py")),
         "no_such_module_anywhere"),
    Case("le-notebook-missing", "local_eval", le("--notebook", f("none.ipynb")),
         "notebook not found"),
    Case("le-notebook-junk", "local_eval", le("--notebook", f("not_json.json")),
         "is not a Jupyter notebook"),
    Case("le-kaggle-missing", "local_eval", le("--dataset", "kaggle:/no/such/folder"),
         "competition folder not found"),
    Case("le-cifar-missing", "local_eval", le("--dataset", "cifar10:/no/such/folder"),
         "cifar10 folder not found"),
    Case("le-out-under-file", "local_eval", le(), "is a file, not a folder", out="under-file"),
    Case("le-out-is-file", "local_eval", le(), "exists and is not a folder", out="is-file"),
    # --- python -m local_eval: the competition folder (a data_stubs stub, broken)
    Case("le-csv-no-column", "local_eval", le("--dataset", kag("no-age-column")),
         "lacks column(s) age"),
    Case("le-csv-unknown-label", "local_eval", le("--dataset", kag("unknown-label")),
         "unknown age_group 12"),
    Case("le-csv-bad-number", "local_eval", le("--dataset", kag("label-not-a-number")),
         "is not a number"),
    Case("le-csv-missing-file", "local_eval", le("--dataset", kag("no-forget-csv")),
         "forget.csv missing"),
    Case("le-empty-forget", "local_eval", le("--dataset", kag("empty-forget")),
         "the forget set is empty"),
    Case("le-overlap", "local_eval", le("--dataset", kag("overlap")),
         "retain and forget overlap"),
    Case("le-image-missing", "local_eval", le("--dataset", kag("missing-image")),
         "image missing"),
    Case("le-image-size", "local_eval", le("--dataset", kag("small-image")),
         "expected an RGB 32x32 image"),
    Case("le-image-mode", "local_eval", le("--dataset", kag("grey-image")),
         "expected an RGB 32x32 image"),
    Case("le-image-junk", "local_eval", le("--dataset", kag("not-an-image")), "cannot read"),
    # --- python -m local_eval: submissions that fail while running
    Case("le-sub-raises", "local_eval", le("--submission", f("raise.py")),
         "raised RuntimeError: boom in unlearning"),
    Case("le-sub-nan", "local_eval", le("--submission", f("nan.py")), "NaN/inf logits"),
    Case("le-sub-hangs", "local_eval", le("--submission", f("hang.py"), "--run-timeout-s", "1"),
         "looks hung"),
    # --- python -m local_eval score
    Case("score-missing", "score", raw("--unlearned", f("none.npy"), "--retrained", f("r.npy")),
         "unlearned file not found", out="none"),
    Case("score-unreadable", "score", raw("--unlearned", lambda w: w.unreadable,
                                          "--retrained", f("r.npy")), "unlearned", out="none"),
    Case("score-not-array", "score", raw("--unlearned", f("not_json.json"),
                                         "--retrained", f("r.npy")),
         "unpickling, which could run code (refused)", out="none"),
    Case("score-wrong-keys", "score", raw("--unlearned", f("wrong_keys.npz"),
                                          "--retrained", f("r.npy")),
         "expected 'confidences'", out="none"),
    Case("score-1d", "score", raw("--unlearned", f("flat.npy"), "--retrained", f("r.npy")),
         "expected (N, E) confidences", out="none"),
    Case("score-strings", "score", raw("--unlearned", f("words.npy"), "--retrained", f("r.npy")),
         "expected numbers", out="none"),
    Case("score-shape-mismatch", "score", raw("--unlearned", f("u.npy"),
                                              "--retrained", f("r6.npy")), "shape", out="none"),
    Case("score-n1", "score", raw("--unlearned", f("one.npy"), "--retrained", f("one.npy")),
         "", out="none"),
    Case("score-nan", "score", raw("--unlearned", f("nan.npy"), "--retrained", f("r.npy")),
         "", out="none"),
    Case("score-logits-no-targets", "score", raw("--unlearned", f("logits.npy"),
                                                 "--retrained", f("logits.npy")),
         "pass --targets", out="none"),
    Case("score-bad-targets", "score", raw("--unlearned", f("logits.npy"),
                                           "--retrained", f("logits.npy"),
                                           "--targets", f("targets_bad.npy")), "", out="none"),
    # --- python -m local_eval shard / merge
    Case("shard-2-of-2", "shard", sh("--shard", "2/2"), "--shard: bad shard '2/2': needs "
         "0 <= i < K (shards are numbered 0 to K-1), e.g. 0/2"),
    Case("shard-0-of-0", "shard", sh("--shard", "0/0"),
         "--shard: bad shard '0/0': needs 0 <= i < K"),
    Case("shard-text", "shard", sh("--shard", "a/b"), "bad shard 'a/b': expected i/K"),
    Case("shard-no-out", "shard", sh("--shard", "0/2"), "give --out SHARD_DIR", out="none"),
    Case("merge-missing", "merge", shards("s0"), "missing shard(s) 1/2 (4 of 8 jobs"),
    Case("merge-duplicate", "merge", shards("s0", "s1", "s0"), "shard 0/2 given twice"),
    Case("merge-mismatch", "merge", shards("s0", "t1"), "different evaluations (recipe.epochs: "
         "1 vs 2)"),
    Case("merge-other-split", "merge", shards("s0", "u1"), "merge the shards of one split"),
    Case("merge-not-a-shard", "merge", raw(lambda w: w.a_dir), "is not a finished shard folder"),
    Case("merge-no-folder", "merge", raw(f("none")), "shard folder not found"),
    # --- python -m submission.run: options
    Case("run-n0", "run", run("--n", "0", "--method", "finetune"), "--n must be at least 1"),
    Case("run-neg-budget-s", "run", run("--budget-s", "-1", "--method", "finetune"),
         "--budget-s must be a positive number"),
    Case("run-neg-budget-h", "run", run("--budget-h", "-2", "--method", "finetune"),
         "--budget-h must be a positive number"),
    Case("run-inf-budget-h", "run", run("--budget-h", "inf", "--method", "finetune"),
         "--budget-h must be a positive number"),
    Case("run-neg-seed", "run", run("--seed", "-1", "--method", "finetune"), "--seed"),
    Case("run-batch0", "run", run("--batch-size", "0", "--method", "finetune"), "--batch-size"),
    Case("run-method", "run", run("--method", "nope"), "unknown method 'nope'"),
    Case("run-hp", "run", run("--method", "finetune", "--hp", "nonsense=1"),
         "has no hyperparameter nonsense"),
    Case("run-hp-form", "run", run("--method", "finetune", "--hp", "lr"), "--hp expects"),
    Case("run-hp-type", "run", run("--method", "finetune", "--hp", "epochs=2.5"),
         "finetune's epochs takes int"),
    Case("run-device", "run", run("--method", "finetune", "--device", "tpu"), "--device"),
    Case("run-arch", "run", run("--method", "finetune", "--arch", "transformer"), "--arch"),
    Case("run-data", "run", run("--method", "finetune", "--data", "imagenet"),
         "cannot load --data 'imagenet'"),
    Case("run-forget", "run", run("--method", "finetune", "--forget", "random:2"),
         "fraction must be in (0, 1)"),
    Case("run-shard-text", "run", run("--method", "finetune", "--shard", "a/b"),
         "--shard: bad shard 'a/b': expected i/K"),
    Case("run-shard-2-of-2", "run", run("--method", "finetune", "--shard", "2/2"),
         "--shard: bad shard '2/2': needs 0 <= i < K"),
    Case("run-shard-zip", "run", run("--method", "finetune", "--shard", "0/2", "--zip"),
         "--zip needs all N checkpoints in one folder"),
    # --- python -m submission.run: the original model
    Case("run-orig-missing", "run", run("--method", "finetune", original=f("none.pth")),
         "original model not found"),
    Case("run-orig-unreadable", "run", run("--method", "finetune", original="unreadable"),
         "original model"),
    Case("run-orig-folder", "run", run("--method", "finetune", original="a_dir"), "is a folder"),
    Case("run-orig-text", "run", run("--method", "finetune", original="text_pth"),
         "cannot read the original model"),
    Case("run-orig-not-dict", "run", run("--method", "finetune", original="not_dict"),
         "is not a state dict"),
    Case("run-orig-nan", "run", run("--method", "finetune", original="nan"), "NaN/inf values"),
    Case("run-orig-inf", "run", run("--method", "finetune", original="inf"), "NaN/inf values"),
    Case("run-orig-extra-key", "run", run("--method", "finetune", original="extra"),
         "unexpected keys: head.bogus"),
    Case("run-orig-missing-key", "run", run("--method", "finetune", original="missing_key"),
         "missing keys"),
    Case("run-orig-shape", "run", run("--method", "finetune", original="shape"), "shapes"),
    # --- python -m submission.run: data and outputs
    Case("run-csv-unknown-label", "run", run("--method", "finetune", "--data",
                                             kag("unknown-label")), "unknown age_group 12"),
    Case("run-empty-forget", "run", run("--method", "finetune", "--data", kag("empty-forget")),
         "the forget set is empty"),
    Case("run-overlap", "run", run("--method", "finetune", "--data", kag("overlap")),
         "retain and forget overlap"),
    Case("run-image-size", "run", run("--method", "finetune", "--data", kag("small-image")),
         "expected an RGB 32x32 image"),
    Case("run-out-under-file", "run", run("--method", "finetune"), "is a file, not a folder",
         out="under-file"),
    Case("run-out-is-file", "run", run("--method", "finetune"), "exists and is not a folder",
         out="is-file"),
    # --- python -m submission.run: submissions
    Case("run-sub-missing", "run", run("--submission", f("none.py")), "submission file not found"),
    Case("run-sub-nodef", "run", run("--submission", f("nodef.py")),
         "defines no function 'unlearning'"),
    Case("run-sub-syntax", "run", run("--submission", f("syntax.py")), "syntax error"),
    Case("run-sub-raises", "run", run("--submission", f("raise.py")),
         "raised RuntimeError: boom in unlearning"),
    Case("run-sub-nan", "run", run("--submission", f("nan.py")), "NaN/inf weights"),
    Case("run-sub-hangs", "run", run("--submission", f("hang.py"), "--budget-h", "0.0004"),
         "job budget ran out"),
    # --- python -m submission.profile
    Case("profile-k0", "profile", raw("--method", "finetune", "--k", "0"),
         "must be at least 1", out="none"),
    Case("profile-neg-budget", "profile", raw("--method", "finetune", "--budget-h", "-1"),
         "--budget-h must be a positive number", out="none"),
    Case("profile-speed0", "profile", raw("--method", "finetune", "--speed-factor", "0"),
         "--speed-factor", out="none"),
    Case("profile-method", "profile", raw("--method", "nope"), "unknown method 'nope'",
         out="none"),
    Case("profile-hp-type", "profile", raw("--method", "finetune", "--hp", "lr=fast"),
         "finetune's lr takes float", out="none"),
    Case("profile-two", "profile", raw("--method", "finetune", "--notebook", f("none.ipynb")),
         "give at most one of --method NAME", out="none"),
    Case("profile-orig-missing", "profile", raw("--method", "finetune", "--arch", "smallcnn",
                                                "--original", f("none.pth")),
         "original model not found", out="none"),
    Case("profile-orig-shape", "profile", raw("--method", "finetune", "--arch", "smallcnn",
                                              "--original", f("shape.pth")),
         "does not fit", out="none"),
    Case("profile-orig-nan", "profile", raw("--method", "finetune", "--arch", "smallcnn",
                                            "--original", f("nan.pth")),
         "NaN/inf values", out="none"),
    Case("profile-machine-missing", "profile", raw("--method", "finetune", "--machine",
                                                   f("none.json")),
         "machine profile not found", out="none"),
    Case("profile-machine-junk", "profile", raw("--method", "finetune", "--machine",
                                                f("not_json.json")), "is not JSON", out="none"),
    Case("profile-sub-raises", "profile", raw("--submission", f("raise.py"), "--k", "1",
                                              "--arch", "smallcnn"),
         "raised RuntimeError: boom in unlearning", out="none"),
    Case("profile-calibrate-under-file", "profile", raw("--calibrate",
                                                        lambda w: w.afile / "m.json"),
         "cannot write --calibrate", out="none"),
    # --- python -m notebooks
    Case("nb-method", "notebooks", raw("build", "--method", "nope"), "unknown method 'nope'",
         out="file"),
    Case("nb-sub-missing", "notebooks", raw("build", "--submission", f("none.py")),
         "is not a file", out="file"),
    Case("nb-sub-nodef", "notebooks", raw("build", "--submission", f("nodef.py")), "unlearning",
         out="file"),
    Case("nb-set-form", "notebooks", raw("build", "--method", "finetune", "--set", "lr"),
         "--hp expects NAME=VALUE", out="file"),
    Case("nb-set-unknown", "notebooks", raw("build", "--method", "finetune", "--set", "zzz=1"),
         "zzz", out="file"),
    Case("nb-hp-type", "notebooks", raw("build", "--method", "finetune", "--hp", "lr=fast"),
         "finetune's lr takes float", out="file"),
    Case("nb-out-under-file", "notebooks", raw("build", "--method", "finetune"),
         "cannot write --out", out="file-under-file"),
    Case("nb-out-is-dir", "notebooks", raw("build", "--method", "finetune"),
         "is a folder", out="file-is-dir"),
    Case("nb-eval-n1", "notebooks", raw("build-eval", "--n-models", "1"),
         "n_models must be an integer of at least 2", out="file"),
    Case("nb-eval-method", "notebooks", raw("build-eval", "--method", "nope"), "nope",
         out="file"),
    Case("nb-eval-dataset", "notebooks", raw("build-eval", "--dataset", "imagenet"), "imagenet",
         out="file"),
    # --- python -m data_stubs
    Case("stub-neg-persons", "data_stubs", raw("make", "--n-persons", "-1"), "n_persons",
         out="stub"),
    Case("stub-zero-forget", "data_stubs", raw("make", "--n-forget-persons", "0"),
         "n_forget_persons must be at least 1", out="stub"),
    Case("stub-zero-images", "data_stubs", raw("make", "--images-per-person", "0"),
         "images_per_person", out="stub"),
    Case("stub-neg-epochs", "data_stubs", raw("make", "--epochs", "-1"), "epochs", out="stub"),
    Case("stub-under-file", "data_stubs", raw("make"), "is a file, not a folder",
         out="stub-under-file"),
    Case("stub-not-empty", "data_stubs", raw("make"), "is not empty; pass --force",
         out="stub-not-empty"),
]


def invoke(entry: str, argv: list[str]) -> tuple[int, str, str]:
    """Run an entry point in-process; ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = ENTRY_POINTS[entry](argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def output_args(case: Case, w: World, tmp: Path) -> tuple[list[str], Path | None, set]:
    """The output arguments of ``case``, the output path, and what must stay unchanged."""
    kind = case.out
    if kind == "none":
        return [], None, set()
    if kind == "dir":
        out = tmp / "out"
    elif kind == "under-file":
        out = w.afile / "out"
    elif kind == "is-file":
        out = tmp / "out"
        out.write_text("already here\n")
    elif kind == "file":
        out = tmp / "nb.ipynb"
    elif kind == "file-under-file":
        out = w.afile / "nb.ipynb"
    elif kind == "file-is-dir":
        out = tmp / "nb.ipynb"
        out.mkdir()
    elif kind == "stub":
        out = tmp / "stub"
    elif kind == "stub-under-file":
        out = w.afile / "stub"
    elif kind == "stub-not-empty":
        out = tmp / "stub"
        out.mkdir()
        (out / "mine.txt").write_text("keep me\n")
    else:
        raise AssertionError(kind)
    before = {p.name: p.stat().st_mtime_ns for p in tmp.iterdir()}
    args = [str(out)] if case.out.startswith("stub") else ["--out", str(out)]
    return args, out, before


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_is_refused_clearly_and_leaves_nothing(case, world, tmp_path):
    extra, out, before = output_args(case, world, tmp_path)
    argv = case.argv(world)
    argv = [*argv[:1], *extra, *argv[1:]] if case.out.startswith("stub") else [*argv, *extra]
    code, _, err = invoke(case.entry, argv)

    assert code not in (0, None), f"{case.id}: exit status 0\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"{case.id}: expected one error line, got:\n{err}"
    assert case.expect in errors[0], f"{case.id}: {errors[0]!r} lacks {case.expect!r}"
    assert len(errors[0]) > len("error: ") + 10, errors[0]  # says something

    if out is not None:  # nothing left behind, nothing changed
        after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        assert after == before, f"{case.id}: the output folder changed: {before} -> {after}"
        if case.out in ("dir", "file", "stub"):
            assert not out.exists()
        if case.out == "stub-not-empty":
            assert [p.name for p in out.iterdir()] == ["mine.txt"]
        if case.out.endswith("under-file"):
            assert world.afile.read_text() == "not a folder\n"
    assert not list(world.root.glob(".*.lock")), "a lock file was left behind"


def test_the_table_covers_every_entry_point_and_topic():
    entries = {c.entry for c in CASES}
    assert entries == set(ENTRY_POINTS)
    ids = " ".join(c.id for c in CASES)
    for topic in ("missing", "unreadable", "csv", "image-size", "image-mode", "extra-key",
                  "missing-key", "shape", "nan", "empty-forget", "overlap", "n0", "n1",
                  "neg-budget", "method", "raises", "hangs"):  # fmt: skip
        assert topic in ids, topic
    assert len({c.id for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(world, tmp_path):
    argv = [*DIGITS_RUN, "--original", str(world.orig), "--submission", world.p("raise.py"),
            "--out", str(tmp_path / "out"), "--debug"]  # fmt: skip
    with pytest.raises(RuntimeError, match="boom in unlearning"):
        invoke("run", argv)
    argv = [*QUICK_LE, "--cache-dir", str(world.cache), "--dataset", "imagenet", "--debug",
            "--out", str(tmp_path / "out2")]  # fmt: skip
    with pytest.raises(ValueError, match="unknown dataset"):
        invoke("local_eval", argv)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_argparse_errors_are_one_line_too(tmp_path):
    code, _, err = invoke("local_eval", ["--n-models", "two"])
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [
        "python -m local_eval: error: argument --n-models: invalid int value: 'two'"
    ]
