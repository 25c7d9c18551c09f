"""Shared fixtures for the local evaluator's tests: a miniature competition folder."""

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

HEADER = ["image_id", "age_group", "age", "person_id"]


def write_kaggle_folder(
    root: Path, *, persons: int = 12, per_person: int = 3, forget_persons: int = 2, seed: int = 0
) -> Path:
    """A competition-layout folder: ``persons`` persons with ``per_person`` 32x32 RGB faces
    each; the first ``forget_persons`` persons form forget.csv, the last third validation.csv,
    the rest retain.csv. Returns ``root``."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list]] = {"retain.csv": [], "forget.csv": [], "validation.csv": []}
    n_val = max(2, persons // 3)
    for p in range(persons):
        age = int(rng.integers(0, 100))
        part = (
            "forget.csv"
            if p < forget_persons
            else ("validation.csv" if p >= persons - n_val else "retain.csv")
        )
        for k in range(per_person):
            image_id = f"p{p:03d}-{k}"
            folder = root / "images" / f"p{p:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.as_tensor(rng.integers(0, 256, (3, 32, 32)), dtype=torch.uint8)
            save_png(pixels, folder / f"{k}.png")
            rows[part].append([image_id, age // 10, age, 1000 + p])
    for name, body in rows.items():
        write_csv(root / name, HEADER, body)
    return root


def save_png(pixels: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its encoders
        warnings.simplefilter("ignore", DeprecationWarning)
        write_png(pixels, str(path))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def kaggle_folder(tmp_path) -> Path:
    return write_kaggle_folder(tmp_path / "competition")
