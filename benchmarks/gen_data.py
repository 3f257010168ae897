"""Generate Kaggle dogs-vs-cats-sized JPEGs (flat `train/cat.N.jpg`, `train/dog.N.jpg`).

Kaggle's images are photos up to 500 px per side, most around 500x375, ~20-40 KB at JPEG quality
~75-95. alexnet.sample_data draws smaller images (80-400 px), so decode and resize costs would be
understated; here each image is 300-500 px per side (about a third exactly 500x375), a smooth
random field plus fine noise and a few shapes, so file sizes and decode times are photo-like.
Deterministic: image i depends only on (seed, i).

    python -m benchmarks.gen_data benchmarks/data/kaggle --n 3000
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("cat", "dog")
STAMP = "generated.json"


def image_name(i: int) -> str:
    """Kaggle flat naming, classes alternating: cat.0.jpg, dog.0.jpg, cat.1.jpg, ..."""
    return f"{CLASSES[i % 2]}.{i // 2}.jpg"


def make_image(seed: int, i: int) -> Image.Image:
    rng = np.random.default_rng([seed, i])
    if rng.random() < 0.35:
        w, h = 500, 375
    else:
        w, h = int(rng.integers(300, 501)), int(rng.integers(300, 501))
    # Smooth colour field (upsampled low-res noise) + fine grain: compresses like a photo.
    low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(20, 120)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if i % 2 else draw.rectangle)([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.0))
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, size=(h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _write(job: tuple[str, int, int]) -> int:
    folder, seed, i = job
    path = Path(folder) / image_name(i)
    make_image(seed, i).save(path, "JPEG", quality=85)
    return path.stat().st_size


def generate(out: Path, n: int, seed: int = 0, start: int = 0, workers: int | None = None) -> dict:
    """Write images start..start+n-1 into out/train/; reuse them if already generated."""
    train = Path(out) / "train"
    stamp = Path(out) / STAMP
    want = {"n": n, "seed": seed, "start": start, "version": 1}
    if stamp.is_file() and json.loads(stamp.read_text()).get("params") == want:
        return json.loads(stamp.read_text())
    train.mkdir(parents=True, exist_ok=True)
    for old in train.glob("*.jpg"):
        old.unlink()
    jobs = [(str(train), seed, i) for i in range(start, start + n)]
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_write, jobs, chunksize=32))
    info = {"params": want, "images": n, "mean_kb": round(sum(sizes) / len(sizes) / 1024, 1)}
    stamp.write_text(json.dumps(info))
    return info


def image_paths(out: Path) -> list[Path]:
    return sorted((Path(out) / "train").glob("*.jpg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(generate(a.out, a.n, a.seed))


if __name__ == "__main__":
    main()
