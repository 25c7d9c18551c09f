"""Files from elsewhere are data, never code.

- Every ``torch.load`` in the kit passes ``weights_only=True`` (checked in the source), and at
  each place that loads weights a crafted pickle whose ``__reduce__`` would create a marker
  file is refused with a clear message, the marker never appearing: ``submission.run
  --original`` (also the stub's ``original_model.pth``), ``submission.profile --original``
  and ``local_eval``'s model cache. ``local_eval`` itself never loads an
  ``original_model.pth``: it trains its own original (checked in the source).
- ``.npy`` / ``.npz`` inputs of ``local_eval score`` are read with ``allow_pickle=False``; an
  ``.npz`` (a zip) is read in memory, so a member named ``../evil.npy`` writes nothing.
- The kit only writes zips (``submission.run --zip``, the Kaggle notebook's
  ``zip_checkpoints``): their members are plain relative names, no ``..``, no absolute path.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from local_eval.cli.main import main as local_eval_main
from local_eval.training.cache import ModelCache
from local_eval.training.models import build_model
from submission.profile import main as profile_main
from submission.run import main as run_main
from submission_tools.run.folder import CHECKPOINT_RE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("submission", "local_eval", "notebooks", "data_stubs", "bench")


class Evil:
    """Unpickling this runs ``os.system`` (here: creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path: Path, marker: Path, *, how: str) -> Path:
    payload = {"0.weight": Evil(marker)}
    if how == "torch":  # torch.save's zip format
        torch.save(payload, path)
    else:  # a bare pickle
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def invoke(fn, argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = fn(argv)
    return code, err.getvalue()


def test_every_torch_load_is_weights_only():
    calls = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    flags = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(flags.get("weights_only"), ast.Constant) and (
                        flags["weights_only"].value is True
                    )
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no torch.load found at all: the scan is broken"
    assert [where for where, ok in calls if not ok] == []


def test_every_numpy_load_refuses_pickles():
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "np"
                ):
                    flags = {k.arg: k.value for k in node.keywords}
                    value = flags.get("allow_pickle")
                    assert isinstance(value, ast.Constant) and value.value is False, (
                        f"{path}:{node.lineno}"
                    )


def test_local_eval_loads_weights_through_one_loader():
    """Every file of weights is read by the one weights-only loader, common/files.py's
    ``safe_torch_load`` (the cache's entries, originals, checkpoints)."""
    loaders = set()
    for path in (ROOT / "local_eval").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and getattr(node.func.value, "id", None) == "torch"
            ):
                loaders.add(path.name)
    assert loaders == {"files.py"}


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("orig") / "original.pth"
    torch.save(build_model("smallcnn", num_classes=10, in_channels=1, image_size=8).state_dict(),
               path)  # fmt: skip
    return path


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_runner_refuses_a_code_running_original(tmp_path, how):
    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "evil.pth", marker, how=how)
    out = tmp_path / "out"
    code, err = invoke(run_main, ["--data", "digits", "--arch", "smallcnn", "--method",
                                  "finetune", "--original", str(evil), "--n", "1",
                                  "--out", str(out)])  # fmt: skip
    assert code == 2
    assert not marker.exists(), "the pickle ran code"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused to load the original model")
    assert "could run code" in lines[0] and "weights_only" not in lines[0]
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("content", [b"not a model\n", bytes(range(256)) * 3])
def test_runner_calls_a_file_that_is_no_pickle_unreadable_not_unsafe(tmp_path, content):
    """torch's weights-only loader reports any bytes it cannot parse as a refused pickle that
    "can still be loaded" with weights_only=False; a text file is not that."""
    junk = tmp_path / "original.pth"
    junk.write_bytes(content)
    out = tmp_path / "out"
    code, err = invoke(run_main, ["--data", "digits", "--arch", "smallcnn", "--method",
                                  "finetune", "--original", str(junk), "--n", "1",
                                  "--out", str(out)])  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read the original model")
    assert "not a file written by torch.save" in lines[0] and "could run code" not in lines[0]
    assert "Traceback" not in err and not out.exists()


def test_profile_refuses_a_code_running_original(tmp_path):
    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "evil.pth", marker, how="torch")
    code, err = invoke(profile_main, ["--method", "finetune", "--arch", "smallcnn", "--k", "1",
                                      "--original", str(evil)])  # fmt: skip
    assert code == 2 and not marker.exists()
    assert err.startswith("error: refused to load the original model") and "Traceback" not in err


def test_runner_refuses_a_stub_original_model_that_runs_code(tmp_path):
    """The competition folder's original_model.pth, as ``python -m data_stubs make`` lays it
    out, replaced by a malicious file."""
    from data_stubs.make import StubConfig, make_stub

    stub = make_stub(tmp_path / "stub", StubConfig(n_persons=6, n_forget_persons=1,
                                                   n_val_persons=2, images_per_person=1,
                                                   epochs=0))  # fmt: skip
    torch.load(stub / "original_model.pth", weights_only=True)  # the real one loads
    marker = tmp_path / "MARKER"
    write_evil(stub / "original_model.pth", marker, how="torch")
    code, err = invoke(run_main, ["--data", f"kaggle:{stub}", "--method", "finetune",
                                  "--original", str(stub / "original_model.pth"),
                                  "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2 and not marker.exists()
    assert "refused to load the original model" in err and not (tmp_path / "out").exists()


def test_cache_refuses_a_code_running_weights_entry(tmp_path, capsys):
    cache = ModelCache(tmp_path / "cache")
    key = cache.group({"role": "original", "arch": "smallcnn"})
    cache.save_weights(key, 0, {"w": torch.ones(2)})
    marker = tmp_path / "MARKER"
    write_evil(tmp_path / "cache" / key / "seed-0.pt", marker, how="torch")
    assert cache.load_weights(key, 0) is None  # counts as missing: retrained and replaced
    assert not marker.exists(), "the pickle ran code"
    err = capsys.readouterr().err
    assert "refused: it holds Python objects other than tensors" in err and "rebuilding" in err
    cache.save_weights(key, 0, {"w": torch.ones(2)})
    assert torch.equal(cache.load_weights(key, 0)["w"], torch.ones(2))


def test_cache_record_with_a_pickled_array_is_refused(tmp_path, capsys):
    cache = ModelCache(tmp_path / "cache")
    key = cache.group({"role": "retrained"})
    marker = tmp_path / "MARKER"
    evil = np.array([Evil(marker)], dtype=object)
    np.savez(tmp_path / "cache" / key / "seed-1.npz", forget_logits=evil)
    assert cache.load(key, 1) is None
    assert not marker.exists() and "rebuilding it" in capsys.readouterr().err


def test_score_refuses_pickled_arrays(tmp_path):
    marker = tmp_path / "MARKER"
    np.save(tmp_path / "evil.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
    np.save(tmp_path / "r.npy", np.random.default_rng(0).random((3, 4)))
    code, err = invoke(local_eval_main, ["score", "--unlearned", str(tmp_path / "evil.npy"),
                                         "--retrained", str(tmp_path / "r.npy")])  # fmt: skip
    assert code == 2 and not marker.exists()
    assert "could run code (refused)" in err and "allow_pickle=True" not in err


def test_score_reads_a_zip_slip_npz_in_memory_only(tmp_path):
    """An .npz is a zip; one whose member is named ``../evil.npy`` must write nothing."""
    inner = tmp_path / "inner"
    inner.mkdir()
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).random((3, 4)))
    for name in ("../evil.npy", "/tmp/absolute_evil.npy", "confidences.npy"):
        with zipfile.ZipFile(inner / "slip.npz", "a") as archive:
            archive.writestr(name, buffer.getvalue())
    np.save(inner / "r.npy", np.random.default_rng(1).random((3, 4)))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, err = invoke(local_eval_main, ["score", "--unlearned", str(inner / "slip.npz"),
                                         "--retrained", str(inner / "r.npy")])  # fmt: skip
    assert code == 0, err  # its 'confidences' member is scored; the others are ignored
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "evil.npy").exists() and not Path("/tmp/absolute_evil.npy").exists()


def test_runner_zip_holds_only_plain_names(original, tmp_path):
    out = tmp_path / "out"
    code, err = invoke(run_main, ["--data", "digits", "--arch", "smallcnn", "--method",
                                  "finetune", "--hp", "epochs=1", "--original", str(original),
                                  "--n", "2", "--budget-s", "0.2", "--out", str(out), "--zip"])
    assert code == 0, err
    with zipfile.ZipFile(out / "submission.zip") as archive:
        names = archive.namelist()
    assert len(names) == 2 and all(CHECKPOINT_RE.match(name) for name in names)
    assert all("/" not in n and "\\" not in n and ".." not in n for n in names)


def test_notebook_zip_holds_relative_names_without_dotdot(tmp_path):
    """The Kaggle notebook's ``zip_checkpoints`` (names like the organisers' template:
    the absolute path without its leading '/')."""
    source = (ROOT / "notebooks" / "kaggle_template.py").read_text()
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
              and n.name == "zip_checkpoints")  # fmt: skip
    namespace = {"os": os, "zipfile": zipfile}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "kaggle_template", "exec"), namespace)
    paths = []
    for i in range(2):
        path = tmp_path / "tmp" / ".." / "tmp" / f"unlearned_checkpoint_{i}.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(str(path))
    namespace["zip_checkpoints"](paths, tmp_path / "submission.zip")
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        names = archive.namelist()
    assert len(names) == 2
    for name in names:
        assert not name.startswith("/") and ".." not in name.split("/"), name
        assert name.endswith(f"tmp/{Path(name).name}")
