import numpy as np
import pytest
import torch

from local_eval.data.setup import load_setup, make_loader, parse_forget_spec, pseudo_person_ids
from tests.local_eval.conftest import HEADER, save_png, write_csv


@pytest.fixture(scope="module")
def digits():
    return load_setup("digits")


def ids(split):
    return set(split.column("image_id").tolist())


def test_digits_split_sizes_and_shapes(digits):
    sizes = digits.describe()["sizes"]
    assert sizes == {"retain": 1132, "forget": 126, "val": 180, "test": 359}  # 1,797 in all
    assert digits.retain.images.shape == (1132, 1, 8, 8)
    assert digits.retain.images.dtype == torch.float32
    assert digits.retain.labels.dtype == torch.int64
    assert float(digits.retain.images.min()) == 0.0 and float(digits.retain.images.max()) == 1.0
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)


def test_splits_are_disjoint(digits):
    parts = [ids(digits.retain), ids(digits.forget), ids(digits.val), ids(digits.test)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 1797


def test_same_seed_same_setup_other_seed_other_split(digits):
    again = load_setup("digits", forget="random:0.1", seed=0)
    assert again.fingerprint == digits.fingerprint
    assert torch.equal(again.forget.images, digits.forget.images)
    other = load_setup("digits", seed=1)
    assert other.fingerprint != digits.fingerprint
    assert ids(other.forget) != ids(digits.forget)


def test_class_forget_removes_the_class_from_retain():
    setup = load_setup("digits", forget="class:3")
    assert len(setup.forget) == 122
    assert set(setup.forget.labels.tolist()) == {3}
    assert 3 not in setup.retain.labels.tolist()
    assert 3 in setup.test.labels.tolist()  # still measurable on held-out data


def test_group_forget_is_person_disjoint():
    setup = load_setup("digits", forget="group:person_id:0.05")
    forget_persons = set(setup.forget.column("person_id").tolist())
    retain_persons = set(setup.retain.column("person_id").tolist())
    assert not forget_persons & retain_persons
    assert len(setup.forget) >= 0.05 * 1258
    assert len(forget_persons) > 1


def test_pseudo_persons_are_small_runs_of_one_class():
    images = torch.rand(40, 1, 4, 4)
    labels = torch.tensor([0] * 20 + [1] * 20)
    person = pseudo_person_ids(images, labels, size=8)
    assert np.array_equal(person, pseudo_person_ids(images, labels, size=8))
    for p in np.unique(person):
        assert len(set(labels[person == p].tolist())) == 1
        assert np.sum(person == p) <= 8
    assert len(np.unique(person)) == 6  # 20 = 8 + 8 + 4 per class


def test_loader_yields_competition_dict_batches(digits):
    loader = make_loader(digits.forget, batch_size=50, shuffle=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    first = batches[0]
    assert set(first) == {"image", "age_group", "image_id", "person_id"}
    assert first["image"].shape == (50, 1, 8, 8)
    assert first["age_group"].dtype == torch.int64
    assert first["image_id"][:1] == [digits.forget.column("image_id")[0]]
    assert torch.equal(torch.cat([b["age_group"] for b in batches]), digits.forget.labels)
    assert loader.dataset[0]["image"].shape == (1, 8, 8)


def test_loader_shuffle_follows_seed_or_global_generator(digits):
    def order(loader):
        return torch.cat([b["age_group"] for b in loader]).tolist()

    assert order(make_loader(digits.val, seed=3)) == order(make_loader(digits.val, seed=3))
    torch.manual_seed(5)
    a = order(make_loader(digits.val))
    torch.manual_seed(5)
    assert order(make_loader(digits.val)) == a


def test_mnist5k_sizes():
    setup = load_setup("mnist5k", forget="random:0.05")
    assert setup.describe()["sizes"] == {"retain": 3325, "forget": 175, "val": 500, "test": 1000}
    assert setup.image_size == 28


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random:1.5", "fraction must be in"),
        ("random:x", "not a number"),
        ("class:a", "integer label"),
        ("class:12", "not in 0..9"),
        ("blah", "bad forget spec"),
        ("group:", "bad forget spec"),
        ("group:shoe_size", "unknown column 'shoe_size'"),
        ("given", "needs a kaggle"),
    ],
)
def test_bad_forget_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        load_setup("digits", forget=spec)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_setup("imagenet")


def test_parse_forget_spec_defaults():
    assert parse_forget_spec("group:person_id").fraction == 0.1
    assert parse_forget_spec("random").fraction == 0.1


# --- the competition folder -----------------------------------------------------------
def test_kaggle_folder_uses_its_own_split(kaggle_folder):
    setup = load_setup(f"kaggle:{kaggle_folder}")
    assert setup.forget_spec == "given"
    assert len(setup.forget) == 6 and len(setup.retain) == 18  # 2 and 6 persons of 3 images
    assert len(setup.val) + len(setup.test) == 12
    assert setup.retain.images.shape[1:] == (3, 32, 32)
    assert float(setup.retain.images.max()) > 200  # 0..255, not normalised
    assert setup.forget.column("image_id")[0] == "p000-0"
    val_persons = set(setup.val.column("person_id").tolist())
    test_persons = set(setup.test.column("person_id").tolist())
    assert val_persons and test_persons and not val_persons & test_persons
    batch = next(iter(make_loader(setup.forget, shuffle=False)))
    assert set(batch) == {"image", "age_group", "image_id", "age", "person_id"}


def test_kaggle_folder_can_be_recut(kaggle_folder):
    setup = load_setup(f"kaggle:{kaggle_folder}", forget="group:person_id:0.2")
    assert len(setup.retain) + len(setup.forget) == 24
    assert not set(setup.forget.column("person_id")) & set(setup.retain.column("person_id"))


def test_kaggle_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="competition folder not found"):
        load_setup(f"kaggle:{tmp_path / 'nope'}")


def test_kaggle_missing_csv(kaggle_folder):
    (kaggle_folder / "forget.csv").unlink()
    with pytest.raises(ValueError, match=r"forget\.csv missing"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_missing_columns(kaggle_folder):
    write_csv(kaggle_folder / "retain.csv", ["image_id", "age_group"], [["p005-0", 1]])
    with pytest.raises(ValueError, match=r"lacks column.*age, person_id"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_unknown_label(kaggle_folder):
    write_csv(kaggle_folder / "forget.csv", HEADER, [["p000-0", 12, 120, 1000]])
    with pytest.raises(ValueError, match="unknown age_group 12"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_wrong_image_mode(kaggle_folder):
    save_png(torch.zeros((1, 32, 32), dtype=torch.uint8), kaggle_folder / "images/p000/0.png")
    with pytest.raises(ValueError, match="expected an RGB 32x32"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_wrong_image_size(kaggle_folder):
    save_png(torch.zeros((3, 16, 32), dtype=torch.uint8), kaggle_folder / "images/p000/0.png")
    with pytest.raises(ValueError, match=r"got shape \(3, 16, 32\)"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_empty_forget(kaggle_folder):
    write_csv(kaggle_folder / "forget.csv", HEADER, [])
    with pytest.raises(ValueError, match="forget set is empty"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_overlap(kaggle_folder):
    write_csv(kaggle_folder / "forget.csv", HEADER, [["p005-0", 1, 10, 1005]])
    with pytest.raises(ValueError, match="retain and forget overlap in 1 image_id"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_kaggle_missing_image(kaggle_folder):
    (kaggle_folder / "images/p000/1.png").unlink()
    with pytest.raises(ValueError, match="image missing for p000-1"):
        load_setup(f"kaggle:{kaggle_folder}")


def test_cifar10_absent(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        load_setup(f"cifar10:{tmp_path}")
    with pytest.raises(ValueError, match="cifar10 folder not found"):
        load_setup(f"cifar10:{tmp_path / 'missing'}")
