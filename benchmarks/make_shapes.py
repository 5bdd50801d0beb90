"""Draw a small colour dataset that is not Fashion-MNIST (nothing downloaded), for the "your own
data" figure of docs/benchmarks.md:

    .venv/bin/python benchmarks/make_shapes.py runs/shapes.npz
    .venv/bin/fashionssl bench --data runs/shapes.npz --methods simclr,supervised --out runs/bench-shapes

32x32 RGB images of five shapes (the classes: circle, square, triangle, cross, ring), each of a random
colour, size and position on a random dark background with noise. Colour carries no information
about the class, so features that ignore it (what colour jitter and random grayscale teach) are the
ones a probe can use. Written as an .npz with x_train/y_train/x_test/y_test and a classes.txt beside
it; every image is drawn at once with coordinate grids (no per-image loop).
"""

import argparse
from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle", "cross", "ring")
SIZE = 32


def shape_masks(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, SIZE, SIZE) bool: each image's shape, of class labels[i], at a random centre and radius."""
    n = len(labels)
    radius = rng.uniform(5, 11, (n, 1, 1))
    centre = rng.uniform(radius[:, :, 0] + 1, SIZE - 1 - radius[:, :, 0], (n, 2))[:, :, None, None]
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    dy, dx = (y - centre[:, 0]) / radius, (x - centre[:, 1]) / radius  # (N, SIZE, SIZE), in radii
    masks = {
        "circle": dy**2 + dx**2 <= 1,
        "square": np.maximum(abs(dy), abs(dx)) <= 0.8,
        "triangle": (dy <= 0.8) & (abs(dx) <= (dy + 1) / 1.8 * 0.9),
        "cross": (np.minimum(abs(dy), abs(dx)) <= 0.3) & (np.maximum(abs(dy), abs(dx)) <= 1),
        "ring": (dy**2 + dx**2 <= 1) & (dy**2 + dx**2 >= 0.45),
    }
    return np.stack([masks[name] for name in CLASSES])[labels, np.arange(n)]


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 (n, SIZE, SIZE, 3) images and their int64 labels, classes balanced."""
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    background = rng.uniform(0, 90, (n, 1, 1, 3)) + rng.normal(0, 12, (n, SIZE, SIZE, 3))
    colour = rng.uniform(100, 255, (n, 1, 1, 3))
    images = np.where(shape_masks(labels, rng)[..., None], colour, background)
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .npz file to write (classes.txt goes beside it)")
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    (x_train, y_train), (x_test, y_test) = draw(a.train, rng), draw(a.test, rng)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (out.parent / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    print(f"{out}: {a.train} training and {a.test} test images, 32x32 RGB, classes {', '.join(CLASSES)}")


if __name__ == "__main__":
    main()
