"""A generated image dataset: shapes drawn with Pillow, saved as .npy images and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")


def draw(kind: int, rng: np.random.Generator, side: int = 32) -> np.ndarray:
    """One (side, side, 3) uint8 image of a shape of random colour, size and place on a random dark background."""
    background = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", (side, side), background)
    pen = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(120, 256, 3))
    size = int(rng.integers(side // 3, side * 2 // 3))
    x, y = (int(v) for v in rng.integers(1, side - size - 1, 2))
    box = (x, y, x + size, y + size)
    if SHAPES[kind] == "circle":
        pen.ellipse(box, fill=colour)
    elif SHAPES[kind] == "square":
        pen.rectangle(box, fill=colour)
    elif SHAPES[kind] == "triangle":
        pen.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
    else:
        third = max(1, size // 3)
        pen.rectangle((x + third, y, x + 2 * third, y + size), fill=colour)
        pen.rectangle((x, y + third, x + size, y + 2 * third), fill=colour)
    return np.asarray(image, dtype=np.uint8)


def write_shapes(folder: Path, count: int = 1200, seed: int = 3) -> tuple[Path, Path]:
    """images.npy (N, 3, 32, 32) uint8 and labels.npy (N,) in folder."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(SHAPES), count)
    images = np.stack([draw(int(k), rng) for k in labels]).transpose(0, 3, 1, 2)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", np.ascontiguousarray(images))
    np.save(folder / "labels.npy", labels.astype(np.int64))
    return folder / "images.npy", folder / "labels.npy"
