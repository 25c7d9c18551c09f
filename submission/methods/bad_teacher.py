"""Bad teacher: distil the original on retain and a randomly initialised network on forget.

Recipe (Chundawat et al. 2023, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks Using an Incompetent Teacher", AAAI; ``blindspot_unlearner``, ``UnLearningData`` and
the CIFAR notebook of their code ``vikram2000b/bad-teaching-unlearning``): the student (the
network) is trained for 1 epoch on the forget set together with a random 30% of the retain
set, shuffled into one loader of batch 256 (``batch_size``), minimising KL(teacher ||
student) at T = 1, where the teacher is the frozen original for retain samples and a frozen
randomly initialised copy for forget samples; Adam lr 1e-4.

Adapted: the kit is handed loaders, not datasets, so each epoch it reads the retain loader's
first 30% of batches (a random subset when the loader shuffles, as the competition's does) and
every forget batch, and deals their examples, shuffled together, into batches of 256. The
random teacher is a fresh draw of the network (:func:`~submission.helpers.reinitialise`): their
teacher is a freshly built ``ResNet18(num_classes, pretrained=False)`` (their ``model.py``,
torchvision's ResNet-18 with a new linear head), so on torchvision's ResNet-18 the draw is its
constructor's (Kaiming-normal convolutions, fan out), on other networks their layers' own
defaults. The
KL is averaged over the batch (``batchmean``) where theirs averages over the batch and the
classes, a constant factor that Adam's update does not see. Under a budget the shuffled
batches run as far as it allows, the forget examples cut with them at random.
"""

import math

import torch

from ..batches import COMPETITION_BATCH, count_batches, device_batches, loader_batch_size
from ..helpers import device_of, frozen_copy, num_classes, reinitialise, teacher_kl
from ..loop import Deadline, TrainLoop
from ..registry import register


def shuffled_union(retain, forget, device, loop: TrainLoop, *, n_retain: int):
    """``(x, is_forget)``: every forget batch and the first ``n_retain`` retain batches, their
    examples in one random order (the torch generator's). The reading runs as ``loop``'s
    phases (the forget batches first), so its deadline stops it."""
    xs, flags = [], []

    def reader(flag: bool):
        def read(batch):
            x, _ = batch
            xs.append(x)
            flags.append(torch.full((len(x),), flag, dtype=torch.bool, device=device))

        return read

    for loader, n, flag in ((forget, count_batches(forget), True), (retain, n_retain, False)):
        loop.run(device_batches(loader, device), reader(flag), steps=n, full=True)
    if not xs:  # the deadline came first
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.bool, device=device)
    x, is_forget = torch.cat(xs), torch.cat(flags)
    order = torch.randperm(len(x)).to(device)
    return x[order], is_forget[order]


@register("bad_teacher")
def bad_teacher(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    retain_fraction: float = 0.3,
    epochs: int = 1,
    temperature: float = 1.0,
    lr: float = 1e-4,
    batch_size: int | None = 256,
):
    if not 0.0 < retain_fraction <= 1.0:
        raise ValueError(f"retain_fraction must lie in (0, 1], got {retain_fraction}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = math.ceil(retain_fraction * count_batches(retain))
    n_forget = count_batches(forget)
    size = batch_size or loader_batch_size(retain) or COMPETITION_BATCH
    competent = frozen_copy(net)
    incompetent = reinitialise(frozen_copy(net))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    classes = num_classes(net)

    def step(batch):
        x, is_forget = batch
        with torch.no_grad():  # each example's teacher: the original, or the random network
            target = torch.empty(len(x), classes, device=device)
            for teacher, rows in ((competent, ~is_forget), (incompetent, is_forget)):
                if rows.any():
                    target[rows] = teacher(x[rows])
        optimizer.zero_grad(set_to_none=True)
        loss = teacher_kl(net(x), target, temperature)
        loss.backward()
        optimizer.step()
        return loss

    # Reading the union is a loop of its own (data only, its steps far cheaper than training's)
    reading = TrainLoop(deadline, planned_steps=epochs * (n_forget + n_retain),
                        full_steps=epochs * (n_forget + n_retain), device=device)  # fmt: skip
    loop = None
    net.train()
    for _ in range(epochs):
        x, is_forget = shuffled_union(retain, forget, device, reading, n_retain=n_retain)
        if loop is None:  # the union's size is known once it is read
            steps = math.ceil(len(x) / size)
            loop = TrainLoop(deadline, planned_steps=epochs * steps, device=device)
        if loop.stopped or reading.stopped:
            break
        batches = ((x[i : i + size], is_forget[i : i + size]) for i in range(0, len(x), size))
        loop.run(batches, step, steps=steps)
    return net.eval()
