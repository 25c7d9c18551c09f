"""Synthetic but learnable 32x32 "faces": what a person's images look like, in numpy.

Each age group has its own base colour and stripe pattern (orientation and frequency), each
person shifts the colour and the stripe phase a little, and each image adds pixel noise and a
small brightness change. A ResNet-18 separates the groups after a few epochs, and the
per-person variation leaves something to memorise, so unlearning a person means something.
"""

import numpy as np

IMAGE_SIZE = 32
NUM_CLASSES = 10


def _group_style(age_group: int) -> tuple[np.ndarray, float, float]:
    """(base RGB colour in 0..255, stripe angle in radians, stripe frequency in cycles/image)."""
    # Colours evenly spaced around the hue circle, so neighbouring groups still differ.
    hue = 2 * np.pi * age_group / NUM_CLASSES
    colour = 128 + 70 * np.cos(hue + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]))
    angle = np.pi * (age_group % 5) / 5
    frequency = 2.0 + 1.5 * (age_group // 5)
    return colour, angle, frequency


def person_style(age_group: int, rng: np.random.Generator) -> dict:
    """Per-person variation of the group's style (draws from ``rng``)."""
    colour, angle, frequency = _group_style(age_group)
    return {
        "colour": colour + rng.normal(0.0, 12.0, size=3),
        "angle": angle + rng.normal(0.0, 0.08),
        "frequency": frequency * (1.0 + rng.normal(0.0, 0.05)),
        "phase": rng.uniform(0.0, 2 * np.pi),
        # A face-like blob whose centre is the person's "identity".
        "centre": rng.uniform(10.0, 22.0, size=2),
    }


def render(style: dict, rng: np.random.Generator) -> np.ndarray:
    """One image of a person: ``(32, 32, 3)`` uint8 (draws noise from ``rng``)."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    u = np.cos(style["angle"]) * xx + np.sin(style["angle"]) * yy
    stripes = np.sin(2 * np.pi * style["frequency"] * u / IMAGE_SIZE + style["phase"])
    cy, cx = style["centre"] + rng.normal(0.0, 1.0, size=2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
    image = style["colour"][None, None, :] * (1.0 + rng.normal(0.0, 0.05))
    image = image + 40.0 * stripes[..., None] + 50.0 * blob[..., None]
    image = image + rng.normal(0.0, 18.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
