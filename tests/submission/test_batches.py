import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from submission.batches import (
    DESIGN_EPOCH_EXAMPLES,
    count_batches,
    count_examples,
    cycle_batches,
    epoch_passes,
    group_size,
    unpack_batch,
)


def test_dict_batch_is_unpacked_to_image_and_age_group():
    batch = {"image": torch.ones(2, 3, 4, 4), "age_group": torch.tensor([1, 2]), "age": [30, 40]}
    x, y = unpack_batch(batch, "cpu")
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    assert y.tolist() == [1, 2] and y.dtype == torch.int64


def test_tuple_and_list_batches_use_the_first_two_entries():
    x, y = unpack_batch(
        [torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]), "id"], "cpu"
    )
    assert x.dtype == torch.float32 and y.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ({"age_group": torch.zeros(1)}, KeyError, "no 'image'"),
        ({"image": torch.zeros(1, 1, 1, 1)}, KeyError, "no label column"),
        (torch.zeros(3), TypeError, "dict batch or an"),
    ],
)
def test_malformed_batches_are_clear_errors(batch, error, match):
    with pytest.raises(error, match=match):
        unpack_batch(batch, "cpu")


def test_count_batches_needs_a_length():
    assert count_batches([1, 2, 3]) == 3
    with pytest.raises(TypeError, match="no len"):
        count_batches(iter([1]))


def test_cycle_re_iterates_and_refuses_empty_loaders():
    loader = [(torch.zeros(1), torch.tensor([i])) for i in range(2)]
    it = cycle_batches(loader, "cpu")
    assert [int(next(it)[1]) for _ in range(5)] == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="empty"):
        next(cycle_batches([], "cpu"))


def test_copies_are_asynchronous_only_towards_a_gpu(monkeypatch):
    """A GPU -> CPU copy made with non_blocking may still be running when the CPU reads it;
    towards a GPU the kernels that use the batch queue behind the copy (faked moves)."""
    seen = []

    def fake_to(self, device, non_blocking=False):
        seen.append((str(device), non_blocking))
        return self

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    batch = (torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    unpack_batch(batch, "cpu")
    unpack_batch(batch, torch.device("cuda:0"))
    assert seen == [("cpu", False), ("cpu", False), ("cuda:0", True), ("cuda:0", True)]


def test_group_size_makes_the_published_batch_from_the_loaders():
    loader = DataLoader(TensorDataset(torch.zeros(10, 1)), batch_size=64)
    assert group_size(loader, 512) == 8 and group_size(loader, 256) == 4
    assert group_size(loader, 16) == 1  # never less than one loader batch a step
    assert group_size(loader, None) == 1
    assert group_size([(torch.zeros(2), torch.zeros(2))], 512) == 1  # its batch size unknown


def loader_over(n: int, batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(torch.zeros(n, 1), torch.zeros(n)), batch_size=batch_size)


def test_an_epoch_of_a_small_retain_set_is_several_passes():
    assert DESIGN_EPOCH_EXAMPLES == 1132  # digits less a random 10%: the defaults' retain set
    assert epoch_passes(loader_over(1132)) == 1 and epoch_passes(loader_over(5000)) == 1
    assert epoch_passes(loader_over(1000)) == 1  # the nearest whole number of passes
    assert epoch_passes(loader_over(600)) == 2  # 1132 / 600 = 1.89
    assert epoch_passes(loader_over(216)) == 5  # the competition stubs' retain set: 5.24
    assert epoch_passes(loader_over(64, batch_size=16)) == 18
    assert epoch_passes(loader_over(100), design_examples=1000) == 10
    assert epoch_passes(loader_over(0)) == DESIGN_EPOCH_EXAMPLES  # no examples: no division by 0


def test_examples_are_counted_from_the_dataset_else_from_the_batches():
    assert count_examples(loader_over(130)) == 130  # the last batch is short
    batches = [(torch.zeros(64, 1), torch.zeros(64))] * 3  # a plain list: 3 batches of 64
    assert count_examples(batches) == 192 and epoch_passes(batches) == 6
