"""The stub competition folder: layout, splits, images, original model, determinism, errors."""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.io import read_image

from data_stubs import CSV_COLUMNS, StubConfig, StubError, make_stub
from data_stubs.__main__ import main

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

SPLITS = ("retain", "forget", "validation")
TINY = StubConfig(seed=3, n_persons=8, n_forget_persons=2, n_val_persons=2,
                  images_per_person=2, epochs=1)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    """The default stub (what `python -m data_stubs make DIR` writes)."""
    return make_stub(tmp_path_factory.mktemp("stub") / "input")


def read_split(root: Path, split: str) -> list[dict]:
    with open(root / f"{split}.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def image_path(root: Path, image_id: str) -> Path:
    part1, part2 = image_id.split("-")
    return root / "images" / part1 / f"{part2}.png"


@pytest.mark.slow  # shares the default stub (seconds to make)
def test_layout_and_columns(stub):
    assert {p.name for p in stub.iterdir()} == {
        "retain.csv", "forget.csv", "validation.csv", "images", "original_model.pth",
        "stub.json"}
    for split in SPLITS:
        rows = read_split(stub, split)
        assert rows
        for row in rows:
            assert 0 <= int(row["age_group"]) < 10
            assert int(row["age"]) > 0 and int(row["person_id"]) > 0
            assert row["image_id"].count("-") == 1
    info = json.loads((stub / "stub.json").read_text())
    assert info["sizes"] == {s: len(read_split(stub, s)) for s in SPLITS}


@pytest.mark.slow  # shares the default stub (seconds to make)
def test_splits_are_person_disjoint_and_forget_is_imbalanced(stub):
    rows = {split: read_split(stub, split) for split in SPLITS}
    persons = {split: {r["person_id"] for r in rows[split]} for split in SPLITS}
    assert not persons["retain"] & persons["forget"]
    assert not persons["validation"] & (persons["retain"] | persons["forget"])
    assert len(persons["forget"]) >= 2  # a few persons, not one
    n_train = len(rows["retain"]) + len(rows["forget"])
    assert 0.02 <= len(rows["forget"]) / n_train <= 0.2
    forget_classes = Counter(r["age_group"] for r in rows["forget"])
    assert len(forget_classes) <= 2
    assert max(forget_classes.values()) >= 0.7 * len(rows["forget"])  # strongly imbalanced
    retain_classes = {r["age_group"] for r in rows["retain"]}
    assert set(forget_classes) <= retain_classes  # forgetting persons, not whole classes
    ids = [r["image_id"] for split in SPLITS for r in rows[split]]
    assert len(ids) == len(set(ids))


@pytest.mark.slow  # shares the default stub (seconds to make)
def test_images_are_32x32_rgb_at_the_competition_paths(stub):
    ids = [r["image_id"] for split in SPLITS for r in read_split(stub, split)]
    assert {image_path(stub, i) for i in ids} == set((stub / "images").glob("*/*.png"))
    image = read_image(str(image_path(stub, ids[0])))
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert image.float().std() > 10  # a pattern, not a flat colour


def _accuracy(net, root, split):
    rows = read_split(root, split)
    x = torch.stack([read_image(str(image_path(root, r["image_id"]))) for r in rows]).float()
    y = torch.tensor([int(r["age_group"]) for r in rows])
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


@pytest.mark.slow  # shares the default stub (seconds to make)
def test_original_model_loads_and_beats_chance(stub):
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.load_state_dict(torch.load(stub / "original_model.pth", weights_only=True))
    net.eval()
    val_rows = read_split(stub, "validation")
    majority = Counter(r["age_group"] for r in val_rows).most_common(1)[0][1] / len(val_rows)
    train_acc, val_acc = _accuracy(net, stub, "retain"), _accuracy(net, stub, "validation")
    assert val_acc > max(0.3, majority)  # chance is 0.1
    assert train_acc > val_acc  # it fits its training persons: something to unlearn


def test_mock_holds_only_empty_txt(tmp_path):
    out = make_stub(tmp_path / "mock", mock=True)
    assert [p.name for p in out.iterdir()] == ["empty.txt"]


@pytest.mark.slow
def test_same_seed_same_stub(tmp_path):
    a, b = make_stub(tmp_path / "a", TINY), make_stub(tmp_path / "b", TINY)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix != ".pth":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    sa = torch.load(a / "original_model.pth", weights_only=True)
    sb = torch.load(b / "original_model.pth", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = make_stub(tmp_path / "c", StubConfig(**{**TINY.__dict__, "seed": 4}))
    assert (other / "retain.csv").read_bytes() != (a / "retain.csv").read_bytes()


def test_refuses_a_non_empty_folder_unless_forced(tmp_path):
    out = tmp_path / "input"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(StubError, match="not empty; pass --force"):
        make_stub(out, mock=True)
    make_stub(out, mock=True, force=True)
    assert [p.name for p in out.iterdir()] == ["empty.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["input"]  # no temporary leftovers
    (tmp_path / "file").write_text("x")
    with pytest.raises(StubError, match="not a directory"):
        make_stub(tmp_path / "file", mock=True, force=True)


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import data_stubs.make

    def broken(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(data_stubs.make, "train_original", broken)
    with pytest.raises(RuntimeError, match="training failed"):
        make_stub(tmp_path / "input", TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_forget_persons": 0}, "n_forget_persons must be at least 1"),
    ({"n_persons": 5, "n_forget_persons": 2}, "must exceed n_forget_persons"),
    ({"images_per_person": 0}, "images_per_person must be at least 1"),
])
def test_bad_sizes_are_refused(tmp_path, changes, message):
    with pytest.raises(StubError, match=message):
        make_stub(tmp_path / "input", StubConfig(**{**TINY.__dict__, **changes}))
    assert not (tmp_path / "input").exists()


def test_cli(tmp_path, capsys):
    assert main(["make", str(tmp_path / "mock"), "--mock"]) == 0
    assert "wrote mock stub" in capsys.readouterr().out
    assert main(["make", str(tmp_path / "mock"), "--mock"]) == 2
    assert "error: " in (err := capsys.readouterr().err) and "--force" in err
    assert main(["make", str(tmp_path / "bad"), "--n-forget-persons", "0"]) == 2
    assert "n_forget_persons must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_local_evaluator_reads_the_stub(stub):
    from local_eval.data import setup as data

    setup = data.load_setup(f"kaggle:{stub}")
    assert (setup.num_classes, setup.in_channels, setup.image_size) == (10, 3, 32)
    assert len(setup.forget) == len(read_split(stub, "forget"))
