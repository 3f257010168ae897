"""Copy a folder of labelled images into data/raw/ and describe every file in a manifest.

Recognised layouts (auto-detected, or forced with `ingest.layout`), after skipping any chain of
single-child folders (Kaggle's `training_set/training_set/`):

- class_folders: SOURCE/<class>/**/<file>            (also PetImages: Cat/, Dog/)
- presplit:      SOURCE/train|training_set/<class>/... + SOURCE/test|test_set/<class>/...
                 (split_hint "train"/"test", so images given as test stay in test)
- kaggle_flat:   SOURCE/train/<label>.<n>.jpg        (label = name before the first dot;
                 unlabelled folders such as test1/ are counted and ignored)

Class names come from the data. Files are copied byte for byte (size and sha256 computed while
copying, each file read once); raw_dir is rebuilt in a temporary directory and renamed into place;
the source is only ever read. Whether a file is really a decodable image is `validate`'s job.

    >>> ingest(Path("data/sample"), Path("data/raw"), Path("data/manifest.csv"),
    ...        Path("reports/ingest.json"), IngestParams())
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from alexnet.errors import DataError
from alexnet.io import atomic_dir, link_or_copy, read_csv, write_csv, write_json
from alexnet.params import IngestParams

_logger = logging.getLogger(__name__)

# mtime_ns: the source file's modification time when it was copied; the next run links the
# copy instead of reading the file again when the source still has this size and mtime.
MANIFEST_COLUMNS = ("path", "label", "split_hint", "bytes", "sha256", "mtime_ns")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", ".ds_store", "desktop.ini"})
SYSTEM_DIRS = frozenset({"__macosx", "$recycle.bin", "system volume information"})
TRAIN_DIRS = frozenset({"train", "training", "training_set", "train_set", "trainset",
                        # Given validation images are labelled training data for us: the split
                        # stage carves its own validation set out of "train".
                        "val", "valid", "validation", "validation_set", "val_set"})
TEST_DIRS = frozenset({"test", "testing", "test_set", "testset"})
CHUNK = 1 << 20

# Ignore reasons (keys of summary["ignored"]).
IGNORED_SYSTEM = "system file"
IGNORED_NOT_IMAGE = "not an image"
IGNORED_UNLABELLED = "unlabelled"
IGNORED_SPECIAL = "not a regular file"  # broken symlinks, sockets, fifos


def image_signature(head: bytes) -> str | None:
    """The format whose magic bytes start `head` (JPEG, PNG, GIF, BMP, WEBP, TIFF), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def is_system_file(rel: PurePosixPath) -> bool:
    """OS litter and hidden files: Thumbs.db, .DS_Store, desktop.ini, AppleDouble `._*`, dot-files,
    and anything under a hidden or OS folder (__MACOSX, .git ...)."""
    if rel.name.lower() in SYSTEM_FILES or rel.name.startswith("."):
        return True
    return any(p.startswith(".") or p.lower() in SYSTEM_DIRS for p in rel.parts[:-1])


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Root:
    """A labelled folder, relative to SOURCE: files below it get labels by `mode`."""

    path: PurePosixPath
    mode: str  # "class_folders": label = first folder below; "flat": label = name prefix
    split_hint: str


@dataclass(frozen=True)
class Layout:
    name: str
    roots: tuple[Root, ...]


def flat_label(name: str) -> str | None:
    """Kaggle flat naming: `cat.0.jpg` -> "cat"; names without `<label>.<id>.<ext>` -> None."""
    parts = name.split(".")
    return parts[0] if len(parts) >= 3 and parts[0] else None


def label_for(rel: PurePosixPath, layout: Layout) -> tuple[str, str] | None:
    """(label, split_hint) for a file at `rel` (relative to SOURCE), or None if it has no label."""
    for root in layout.roots:
        try:
            below = rel.relative_to(root.path)
        except ValueError:
            continue
        if root.mode == "class_folders":
            return (below.parts[0], root.split_hint) if len(below.parts) >= 2 else None
        if len(below.parts) == 1:
            label = flat_label(below.name)
            return (label, root.split_hint) if label else None
        return None
    return None


# --- layout detection: reads directory listings only ----------------------------------------

def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return [e for e in entries if not is_system_file(PurePosixPath(e.name))
            and e.name.lower() not in SYSTEM_DIRS]


def _listing(path: Path) -> tuple[list[Path], list[Path]]:
    """Visible (subdirectories, files) of `path`, sorted by name."""
    with os.scandir(path) as it:
        entries = sorted(_visible(list(it)), key=lambda e: e.name)
    dirs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    files = [Path(e.path) for e in entries if e.is_file()]
    return dirs, files


def _image_files(files: list[Path]) -> list[Path]:
    return [f for f in files if has_image_extension(f.name)]


def _descend(path: Path) -> Path:
    """Follow a chain of wrapper folders: while `path` holds no images and exactly one subfolder
    that holds no images directly either, step into it (`training_set/training_set/cats/` stops
    at the inner training_set; `test/a/z.jpg` stops at test/, whose only class is a/)."""
    while True:
        dirs, files = _listing(path)
        if len(dirs) != 1 or _image_files(files) or _image_files(_listing(dirs[0])[1]):
            return path
        path = dirs[0]


def _has_image(path: Path) -> bool:
    """Any file with an image extension below `path`, system files and hidden folders aside."""
    for _dirpath, dirnames, files in os.walk(path):
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and d.lower() not in SYSTEM_DIRS]
        if any(has_image_extension(f) and not is_system_file(PurePosixPath(f)) for f in files):
            return True
    return False


def _class_dirs(path: Path) -> list[Path]:
    return [d for d in _listing(path)[0] if _has_image(d)]


def _flat_labelled(path: Path) -> bool:
    """At least half of the image files directly in `path` are named `<label>.<id>.<ext>`."""
    images = _image_files(_listing(path)[1])
    return bool(images) and 2 * sum(flat_label(f.name) is not None for f in images) >= len(images)


def _split_dirs(root: Path) -> dict[str, list[Path]]:
    """Pre-split folders directly under `root`, by split hint."""
    found: dict[str, list[Path]] = {"train": [], "test": []}
    for d in _listing(root)[0]:
        name = d.name.lower()
        if name in TRAIN_DIRS:
            found["train"].append(d)
        elif name in TEST_DIRS:
            found["test"].append(d)
    return found


def _try_presplit(source: Path, root: Path) -> Layout | None:
    splits = _split_dirs(root)
    if not splits["train"] or not splits["test"]:
        return None
    roots = []
    for hint, dirs in splits.items():
        for d in dirs:
            inner = _descend(d)
            if _class_dirs(inner):
                roots.append(Root(_rel(inner, source), "class_folders", hint))
    if {r.split_hint for r in roots} != {"train", "test"}:
        return None
    return Layout("presplit", tuple(roots))


def _find_flat(path: Path) -> Path | None:
    """`path` or the first folder down a chain of single wrapper folders that is flat-labelled."""
    while not _flat_labelled(path):
        dirs, files = _listing(path)
        if len(dirs) != 1 or _image_files(files):
            return None
        path = dirs[0]
    return path


def _try_kaggle_flat(source: Path, root: Path) -> Layout | None:
    flat = [d for d in map(_find_flat, _split_dirs(root)["train"]) if d is not None]
    if flat:
        return Layout("kaggle_flat", tuple(Root(_rel(d, source), "flat", "") for d in flat))
    if _flat_labelled(root):  # SOURCE is the train/ folder itself
        return Layout("kaggle_flat", (Root(_rel(root, source), "flat", ""),))
    return None


def _try_class_folders(source: Path, root: Path) -> Layout | None:
    if len(_class_dirs(root)) >= 1:
        return Layout("class_folders", (Root(_rel(root, source), "class_folders", ""),))
    return None


_DETECTORS = {"presplit": _try_presplit, "kaggle_flat": _try_kaggle_flat,
              "class_folders": _try_class_folders}
_LOOKED_FOR = {
    "presplit": "train/ (or training_set/) and test/ (or test_set/) folders, each holding "
                "one folder of images per class",
    "kaggle_flat": "a train/ folder of images named <label>.<id>.<ext> (e.g. cat.0.jpg)",
    "class_folders": "one folder of images per class (e.g. cats/, dogs/)",
}


def detect_layout(source: Path, layout: str = "auto") -> Layout:
    """Recognise how `source` is organised; `layout` other than "auto" forces one.

    Raises:
        DataError: nothing matches (the message says what was looked for).
    """
    if not _has_image(source):
        raise DataError(f"{source}: no labelled images found: no file below it has an image "
                        f"extension ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    root = _descend(source)
    names = list(_DETECTORS) if layout == "auto" else [layout]
    for name in names:
        found = _DETECTORS[name](source, root)
        if found is not None:
            return found
    wanted = "; or ".join(_LOOKED_FOR[n] for n in names)
    where = f"{source}" + (f" (looked inside {_rel(root, source)})" if root != source else "")
    raise DataError(f"{where}: cannot recognise the layout ({layout}): looked for {wanted}")


def _rel(path: Path, source: Path) -> PurePosixPath:
    return PurePosixPath(path.relative_to(source).as_posix())


# --- copying: the I/O edge ------------------------------------------------------------------

def copy_if_image(src: Path, dst: Path, by_extension: bool) -> tuple[int, str] | None:
    """Copy `src` to `dst` byte for byte, returning (size, sha256); read once, in chunks.

    Unless `by_extension`, the file is copied only if its first bytes are an image signature;
    otherwise nothing is written and None is returned.
    """
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin:
        chunk = fin.read(CHUNK)
        if not by_extension and image_signature(chunk[:16]) is None:
            return None
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as fout:
            while chunk:
                digest.update(chunk)
                fout.write(chunk)
                size += len(chunk)
                chunk = fin.read(CHUNK)
        stat = os.fstat(fin.fileno())
    os.utime(dst, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # lets the next run spot it unchanged
    return size, digest.hexdigest()


def previous_copies(raw_dir: Path,
                    manifest_path: Path) -> dict[str, tuple[int, str, int | None]]:
    """path -> (bytes, sha256, source mtime_ns) from the previous run's manifest (empty if there
    is none; mtime None in a manifest written before that column existed)."""
    if not (raw_dir.is_dir() and manifest_path.is_file()):
        return {}
    return {r["path"]: (int(r["bytes"]), r["sha256"],
                        int(r["mtime_ns"]) if r.get("mtime_ns") else None)
            for r in read_csv(manifest_path)}


def link_unchanged(src: Path, old: Path, dst: Path,
                   known: tuple[int, str, int | None] | None) -> tuple[int, str] | None:
    """Hard-link the previous copy `old` to `dst` if `src` is unchanged since it was copied.

    Unchanged means the size and modification time the manifest recorded for it (the test rsync
    and make use); then the recorded sha256 is reused and the file is neither read nor copied
    again. The manifest, not the copy's own mtime: with DVC's linked cache, `dvc repro` replaces
    the old copies by plain copies (DVC's unprotect of persist outputs), which have new mtimes.
    Returns (size, sha256), or None when it must be copied.
    """
    if known is None:
        return None
    try:
        s, o = src.stat(), old.stat()
    except OSError:
        return None
    recorded_mtime = known[2] if known[2] is not None else o.st_mtime_ns
    if not (s.st_size == o.st_size == known[0] and s.st_mtime_ns == recorded_mtime):
        return None
    link_or_copy(old, dst)
    return known[0], known[1]


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return image_signature(fh.read(16))


def _walk_files(source: Path):
    """Every file below `source` as a posix path relative to it, sorted.

    Symlinked folders are not followed (no loops, no escaping the source)."""
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames):
            yield _rel(base / name, source)


def _check_paths(source: Path, raw_dir: Path) -> None:
    if not source.exists():
        raise DataError(f"{source}: source folder does not exist")
    if not source.is_dir():
        raise DataError(f"{source}: source is not a directory")
    s, r = source.resolve(), raw_dir.resolve()
    if s == r or s in r.parents or r in s.parents:
        raise DataError(f"{raw_dir}: raw_dir must not be inside the source {source} or contain it")


def ingest(source: Path, raw_dir: Path, manifest_path: Path, summary_path: Path,
           params: IngestParams) -> dict:
    """Copy every labelled image candidate of `source` into `raw_dir` and write the manifest.

    Manifest CSV (sorted by path): path (posix, relative to raw_dir), label, split_hint
    ("" | "train" | "test"), bytes, sha256.

    Returns:
        the summary written to `summary_path`: layout, classes, files_seen, ingested,
        per_class, per_split_hint, ignored {reason: n}.
    Raises:
        DataError: source missing or not a directory, layout not recognised, no labelled images.
    """
    source, raw_dir = Path(source), Path(raw_dir)
    _check_paths(source, raw_dir)
    layout = detect_layout(source, params.layout)

    previous = previous_copies(raw_dir, manifest_path)
    rows: list[dict] = []
    ignored: Counter[str] = Counter()
    seen = linked = 0
    with atomic_dir(raw_dir) as tmp:
        for rel in _walk_files(source):
            seen += 1
            if is_system_file(rel):
                ignored[IGNORED_SYSTEM] += 1
                continue
            if not (source / rel).is_file():
                ignored[IGNORED_SPECIAL] += 1
                continue
            by_extension = has_image_extension(rel.name)
            labelled = label_for(rel, layout)
            if labelled is None:
                image = by_extension or _sniff(source / rel) is not None
                ignored[IGNORED_UNLABELLED if image else IGNORED_NOT_IMAGE] += 1
                continue
            try:
                # Taken before reading: a change during the copy is seen by the next run.
                mtime_ns = (source / rel).stat().st_mtime_ns
                copied = link_unchanged(source / rel, raw_dir / rel, tmp / rel,
                                        previous.get(rel.as_posix()))
                linked += copied is not None
                copied = copied or copy_if_image(source / rel, tmp / rel, by_extension)
            except OSError as exc:
                raise DataError(f"{source / rel}: cannot read source file: {exc}") from exc
            if copied is None:
                ignored[IGNORED_NOT_IMAGE] += 1
                continue
            size, sha = copied
            rows.append({"path": rel.as_posix(), "label": labelled[0],
                         "split_hint": labelled[1], "bytes": size, "sha256": sha,
                         "mtime_ns": mtime_ns})
        if not rows:
            raise DataError(f"{source}: no labelled images found (layout {layout.name}; "
                            f"{seen} files seen, ignored: {dict(ignored) or 'none'})")

    rows.sort(key=lambda r: r["path"])
    write_csv(manifest_path, MANIFEST_COLUMNS, rows)
    summary = summarise(layout, rows, seen, ignored)
    write_json(summary_path, summary)
    _logger.info("ingest: %s layout, %d of %d files ingested (%d unchanged since the last run), "
                 "classes %s, ignored %s", layout.name, len(rows), seen, linked,
                 summary["per_class"], summary["ignored"])
    return summary


def summarise(layout: Layout, rows: list[dict], seen: int, ignored: Counter[str]) -> dict:
    """The ingest report: what was found, what was taken, what was left and why."""
    per_class = Counter(r["label"] for r in rows)
    per_hint = Counter(r["split_hint"] for r in rows)
    classes = sorted(per_class)
    if len(classes) < 2:
        _logger.warning("ingest: only one class found (%s); a classifier needs at least two",
                        classes[0])
    train_classes = {r["label"] for r in rows if r["split_hint"] == "train"}
    for label in sorted({r["label"] for r in rows if r["split_hint"] == "test"} - train_classes):
        _logger.warning("ingest: class %r appears in the given test set only", label)
    return {
        "layout": layout.name,
        "roots": [{"path": r.path.as_posix(), "mode": r.mode, "split_hint": r.split_hint}
                  for r in layout.roots],
        "classes": classes,
        "files_seen": seen,
        "ingested": len(rows),
        "per_class": {c: per_class[c] for c in classes},
        "per_split_hint": {h: per_hint[h] for h in sorted(per_hint)},
        "ignored": {k: ignored[k] for k in sorted(ignored)},
    }
