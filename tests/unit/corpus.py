"""Generate the bad-input corpus: one small real file of each kind, with the verdict it must get.

Used by test_validate and test_ingest:

    cases = write_corpus(tmp_path / "corpus")   # {name: Case(path, reason, notes)}
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    path: Path
    reason: str                  # expected Verdict.reason ("" = accepted)
    notes: tuple[str, ...] = ()  # notes the accepted verdict must include


def pattern(size: tuple[int, int] = (120, 90), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random (so not compressible to nothing, and unique per seed) image."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def image_bytes(fmt: str, size: tuple[int, int] = (120, 90), seed: int = 0, mode: str = "RGB",
                **save: object) -> bytes:
    buf = io.BytesIO()
    pattern(size, seed, mode).save(buf, format=fmt, **save)
    return buf.getvalue()


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of width x height, all black, built row by row (~50 KB, no big array)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated_jpeg(size: tuple[int, int] = (120, 60), orientation: int = 6) -> bytes:
    img = pattern(size, seed=7)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def animated_gif(size: tuple[int, int] = (64, 48)) -> bytes:
    frames = [pattern(size, seed=s).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
              for s in (11, 12)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def corpus_bytes() -> dict[str, tuple[str, bytes, str, tuple[str, ...]]]:
    """{case name: (file name, content, expected reason, expected notes)}."""
    jpeg = image_bytes("JPEG", seed=1)
    return {
        "empty": ("empty.jpg", b"", "empty file", ()),
        "half_jpeg": ("half.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt", ()),
        "jpeg_20_bytes": ("twenty.jpg", jpeg[:20], "truncated or corrupt", ()),
        "text": ("notes.jpg", b"just some text, not pixels\n" * 4, "not an image", ()),
        "html": ("page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
                 "not an image", ()),
        "png_as_jpg": ("really_png.jpg", image_bytes("PNG", seed=2), "", ("extension-mismatch",)),
        "cmyk": ("cmyk.jpg", image_bytes("JPEG", seed=3, mode="CMYK"), "", ("cmyk",)),
        "grayscale": ("gray.png", image_bytes("PNG", seed=4, mode="L"), "", ("grayscale",)),
        "rgba": ("rgba.png", image_bytes("PNG", seed=5, mode="RGBA"), "", ("alpha",)),
        "animated_gif": ("anim.gif", animated_gif(), "", ("palette", "animated")),
        "exif_rotated": ("rotated.jpg", exif_rotated_jpeg(), "", ("exif-rotated",)),
        "huge": ("huge.png", huge_png(), "too many pixels", ()),
        "tiny": ("tiny.png", image_bytes("PNG", size=(8, 8), seed=6), "too small", ()),
        "good": ("good.jpg", image_bytes("JPEG", seed=8), "", ()),
    }


def write_corpus(directory: Path) -> dict[str, Case]:
    """Write every corpus file into `directory`; returns {case name: Case}."""
    directory.mkdir(parents=True, exist_ok=True)
    cases = {}
    for name, (filename, content, reason, notes) in corpus_bytes().items():
        path = directory / filename
        path.write_bytes(content)
        cases[name] = Case(path, reason, notes)
    return cases


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Create `root` with {posix relative path: content}; returns `root`."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    root.mkdir(parents=True, exist_ok=True)
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below `root` (to prove nothing was modified)."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def raw_members(raw_dir: Path) -> dict[str, bytes]:
    """{member name: bytes} of every image in the packs of an ingested raw_dir (alexnet.packs):
    what `tar -xf` of its packs would write."""
    import tarfile

    members = {}
    for pack in sorted(Path(raw_dir).glob("*.tar")):
        with tarfile.open(pack) as tar:
            for info in tar.getmembers():
                members[info.name] = tar.extractfile(info).read()
    return members


def damage_members(raw_dir: Path, paths: list[str]) -> None:
    """Overwrite the bytes of these images inside raw_dir's packs (its index says where): data/raw
    changed after ingest. raw_dir must be a copy: its packs are written in place."""
    from alexnet.packs import read_index

    where = read_index(raw_dir)
    for path in paths:
        row = where[path]
        with open(Path(raw_dir) / row["pack"], "r+b") as fh:
            fh.seek(int(row["offset"]))
            fh.write(b"garbage".ljust(int(row["bytes"]), b"\0"))


def pack_images(raw_dir: Path, images: dict[str, bytes]) -> list[dict]:
    """Write `images` ({path: bytes}, label = first folder) into a new pack of raw_dir and add
    them to its index, as ingest would; returns their manifest rows."""
    import hashlib

    from alexnet.ingest import MANIFEST_COLUMNS
    from alexnet.packs import PackWriter, read_index, write_index

    Path(raw_dir).mkdir(parents=True, exist_ok=True)
    rows = [{"path": path, "label": path.split("/")[0], "split_hint": "", "bytes": len(data),
             "sha256": hashlib.sha256(data).hexdigest(), "mtime_ns": 0}
            for path, data in images.items()]
    with PackWriter(Path(raw_dir)) as writer:
        for row, data in zip(rows, images.values()):
            writer.add(row, data, 0)
    write_index(raw_dir, [*read_index(raw_dir).values(), *rows])
    return [{k: r[k] for k in MANIFEST_COLUMNS} for r in rows]
