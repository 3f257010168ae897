"""Copy a folder of labelled images into data/raw/ and describe every file in a manifest.

Recognised layouts (auto-detected, or forced with `ingest.layout`), after skipping any chain of
single-child folders (Kaggle's `training_set/training_set/`):

- class_folders: SOURCE/<class>/**/<file>            (also PetImages: Cat/, Dog/)
- presplit:      SOURCE/train|training_set/<class>/... + SOURCE/test|test_set/<class>/...
                 (split_hint "train"/"test", so images given as test stay in test)
- kaggle_flat:   SOURCE/train/<label>.<n>.jpg        (label = name before the first dot;
                 unlabelled folders such as test1/ are counted and ignored)

Class names come from the data. Files are copied byte for byte into packs, a few tar files
(alexnet.packs: DVC tracks a handful of files, not one per image), each file read once for its
size and sha256; a file unchanged since the last run (same size and mtime) is not read again, its
image stays in the previous run's pack. raw_dir is rebuilt in a temporary directory and renamed
into place; the source is only ever read. Whether a file is really a decodable image is
`validate`'s job.

    >>> ingest(Path("data/sample"), Path("data/raw"), Path("data/manifest.csv"),
    ...        Path("reports/ingest.json"), IngestParams())
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from alexnet.errors import DataError
from alexnet.fingerprint import fingerprint, read_stamp, write_stamp
from alexnet.io import (atomic_dir, atomic_path, check_output_dir, keep, link_or_copy,
                        previous_output, write_csv, write_json)
from alexnet.packs import (PACK_NAME, Member, PackInfo, PackWriter, pack_intact, read_index,
                           trusted_packs, write_index, write_packs_listing)
from alexnet.params import IngestParams

_logger = logging.getLogger(__name__)

# The images, by content: where their bytes are and when ingest read them is raw_dir's index
# (alexnet.packs), so the manifest changes only when the images do, not with which run read
# which file (and when), nor with a `touch` or a copy of the source.
MANIFEST_COLUMNS = ("path", "label", "split_hint", "bytes", "sha256")
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
IGNORED_SPECIAL = "not a regular file"  # symlinks, sockets, fifos, devices
IGNORED_TOO_LARGE = "larger than ingest.max_bytes"
IGNORED_BAD_NAME = "file name not UTF-8"
MAX_CLASS_NAME = 100  # characters


class NotRegularFile(OSError):
    """A path that is a symlink, FIFO, socket or device where a regular file was expected."""


class TooLarge(Exception):
    """A file grew past the byte bound while it was being copied."""


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading, never through a symlink and never blocking on a FIFO.

    O_NOFOLLOW refuses a link swapped in after an lstat; O_NONBLOCK lets a FIFO open at once so
    that fstat can refuse it. Raises NotRegularFile for anything but a regular file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a socket
            raise NotRegularFile(exc.errno, "not a regular file", str(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name (it ends up in plots, reports, CSVs and model.json),
    or None. Printable, at most MAX_CLASS_NAME characters, no path separator."""
    if not is_utf8(name):
        return "it is not valid UTF-8"
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_CLASS_NAME:
        return f"it is {len(name)} characters long (at most {MAX_CLASS_NAME})"
    if not name.isprintable():
        return "it contains a control or invisible character"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    return None


def is_utf8(text: str) -> bool:
    """False for a name decoded from bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: Path) -> str:
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


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
    if _is_system_name(rel.name):
        return True
    return any(p.startswith(".") or p.lower() in SYSTEM_DIRS for p in rel.parts[:-1])


def _is_system_name(name: str) -> bool:
    return name.lower() in SYSTEM_FILES or name.startswith(".")


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
    return [e for e in entries if not _is_system_name(e.name)
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


# --- reading: the I/O edge ------------------------------------------------------------------

def read_if_image(src: Path, by_extension: bool, max_bytes: int | None = None) -> bytes | None:
    """The bytes of `src`, read once, in chunks.

    Unless `by_extension`, only a file whose first bytes are an image signature is read on;
    otherwise None is returned. `src` must be a regular file, opened without following links
    (NotRegularFile otherwise); TooLarge if it holds more than `max_bytes`.
    """
    chunks, size = [], 0
    with open_regular(src) as fin:
        chunk = fin.read(CHUNK)
        if not by_extension and image_signature(chunk[:16]) is None:
            return None
        while chunk:
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:  # it grew since its lstat
                raise TooLarge(src)
            chunks.append(chunk)
            chunk = fin.read(CHUNK)
    return b"".join(chunks)


def raw_fingerprint(params: IngestParams) -> str:
    """What wrote raw_dir's packs and index and the manifest's sha256s: params and this code."""
    return fingerprint("alexnet.ingest", params)


def previous_rows(raw_dir: Path, params: IngestParams) -> dict[str, dict]:
    """path -> the previous run's index row (bytes, sha256, source mtime, pack, offset); empty
    if there is none or if other code or params wrote it (raw_dir's stamp, alexnet.fingerprint).
    The index is written with the packs, in the same folder: they always agree."""
    if not raw_dir.is_dir():
        return {}
    if read_stamp(raw_dir) != raw_fingerprint(params):
        _logger.info("ingest: %s was written by other code or params: reading every file",
                     raw_dir)
        return {}
    return read_index(raw_dir)


def unchanged(s: os.stat_result, known: dict | None) -> bool:
    """Whether the source file whose lstat is `s` still has the size and modification time the
    previous run recorded for it (the test rsync and make use): then it is not read again."""
    return (known is not None and str(s.st_size) == known.get("bytes")
            and str(s.st_mtime_ns) == known.get("mtime_ns"))


class _Packs:
    """The previous run's packs that images of this run still use, each checked once
    (alexnet.packs.pack_intact), and which rows use them."""

    def __init__(self, old_dir: Path) -> None:
        self.old_dir, self.recorded = old_dir, trusted_packs(old_dir)
        self.intact: dict[str, bool] = {}
        self.rows: dict[str, list[dict]] = {}

    def reuse(self, row: dict, known: dict) -> bool:
        """Point `row` at its image in the previous pack `known` names, if that pack is
        intact."""
        name = known["pack"]
        if not PACK_NAME.fullmatch(name):
            return False
        if name not in self.intact:
            self.intact[name] = pack_intact(self.old_dir / name, self.recorded.get(name))
        if not self.intact[name]:
            return False
        row.update(bytes=known["bytes"], sha256=known["sha256"], pack=name,
                   offset=known["offset"])
        self.rows.setdefault(name, []).append(row)
        return True

    def carry_over(self, into: Path, writer: PackWriter, source: Path) -> dict[str, PackInfo]:
        """Link each used previous pack into `into`, or, when images no longer listed make up
        more than half of its image bytes, write its images into new packs instead (read from
        it, checked against their sha256; from the source if it no longer holds them). Returns
        the linked packs."""
        linked = {}
        for name, rows in sorted(self.rows.items()):
            recorded = self.recorded[name]
            if 2 * sum(int(r["bytes"]) for r in rows) >= recorded.image_bytes:
                if not (into / name).exists():  # else written again, byte for byte (its name)
                    link_or_copy(self.old_dir / name, into / name)
                linked[name] = recorded
                continue
            for row in rows:
                try:
                    data = Member.of(self.old_dir, row).read()
                except DataError:  # changed in place under its recorded mtime
                    try:
                        data = read_if_image(source / row["path"], True)
                    except (OSError, TooLarge) as exc:
                        raise DataError(f"{source / row['path']}: cannot read source file: "
                                        f"{exc}") from exc
                    row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
                writer.add(row, data, int(row["mtime_ns"]))
        return linked


def _sniff(path: Path) -> str | None:
    with open_regular(path) as fh:
        return image_signature(fh.read(16))


def _walk_files(source: Path):
    """Every file below `source` as a posix path relative to it, sorted.

    Symlinked folders are not followed (no loops, no escaping the source); symlinked files are
    listed, and skipped by the caller as not regular files."""
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        base = _rel(Path(dirpath), source)
        for name in sorted(filenames):
            yield base / name


def source_classes(source: Path, layout: str = "auto") -> list[str]:
    """The class names ingest would find in `source`, from the folder listing alone (no file is
    read): what `alexnet predict` checks the champion's classes against."""
    found = detect_layout(Path(source), layout)
    labels = set()
    for rel in _walk_files(Path(source)):
        if not is_system_file(rel) and has_image_extension(rel.name):
            labelled = label_for(rel, found)
            if labelled is not None:
                labels.add(labelled[0])
    return sorted(labels)


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
    """Copy every labelled image candidate of `source` into packs in `raw_dir` and write the
    manifest.

    Manifest CSV (sorted by path): path (posix, relative to `source`: the image's name),
    label, split_hint ("" | "train" | "test"), bytes, sha256. raw_dir's index.csv says in which
    pack each image is, and where (alexnet.packs).

    Returns:
        the summary written to `summary_path`: layout, classes, files_seen, ingested,
        per_class, per_split_hint, ignored {reason: n}, empty_class_folders [path].
    Raises:
        DataError: source missing or not a directory, layout not recognised, no labelled images.
    """
    source, raw_dir = Path(source), Path(raw_dir)
    _check_paths(source, raw_dir)
    layout = detect_layout(source, params.layout)

    # The previous packs: raw_dir, or after `dvc repro` removed it, its kept twin (io.keep).
    old_dir = previous_output(raw_dir)
    previous = previous_rows(old_dir, params)
    old_packs = _Packs(old_dir)
    rows: list[dict] = []
    ignored: Counter[str] = Counter()
    classes_checked: set[str] = set()
    seen = reused = 0
    # The manifest is written inside the raw_dir block: data/raw and the manifest are replaced
    # together (raw first, the manifest right after), or neither is if anything fails.
    check_output_dir(raw_dir)  # refused before anything is created beside it
    with atomic_path(manifest_path) as manifest_tmp, atomic_dir(raw_dir) as tmp, \
            PackWriter(tmp) as writer:
        write_stamp(tmp, raw_fingerprint(params))
        for rel in _walk_files(source):
            seen += 1
            if is_system_file(rel):
                ignored[IGNORED_SYSTEM] += 1
                continue
            try:
                st = os.lstat(source / rel)
            except FileNotFoundError:  # removed since the directory was listed
                ignored[IGNORED_SPECIAL] += 1
                continue
            if not stat.S_ISREG(st.st_mode):  # symlinks (never followed), fifos, sockets...
                ignored[IGNORED_SPECIAL] += 1
                continue
            # A file name first: in the Kaggle layout it holds the label, and one bad name is one
            # skipped file. A bad class folder stops the run (_check_class_name); a bad name of
            # any other folder on the way skips its files.
            if not is_utf8(rel.name):
                labelled = None
            else:
                labelled = label_for(rel, layout)
                if labelled is not None and labelled[0] not in classes_checked:
                    _check_class_name(labelled[0], source, rel, layout)
                    classes_checked.add(labelled[0])
            if not is_utf8(rel.as_posix()):
                ignored[IGNORED_BAD_NAME] += 1
                _logger.warning("ingest: skipping %s: its name is not valid UTF-8",
                                _shown(source / rel))
                continue
            by_extension = has_image_extension(rel.name)
            if labelled is None:
                try:
                    image = by_extension or _sniff(source / rel) is not None
                except NotRegularFile:
                    ignored[IGNORED_SPECIAL] += 1
                    continue
                ignored[IGNORED_UNLABELLED if image else IGNORED_NOT_IMAGE] += 1
                continue
            if st.st_size > params.max_bytes:
                ignored[IGNORED_TOO_LARGE] += 1
                _logger.warning("ingest: skipping %s: %d bytes > ingest.max_bytes %d",
                                source / rel, st.st_size, params.max_bytes)
                continue
            # Taken before reading (lstat above): a change during the read is seen by the next
            # run.
            row = {"path": rel.as_posix(), "label": labelled[0], "split_hint": labelled[1],
                   "mtime_ns": st.st_mtime_ns}
            known = previous.get(row["path"])
            if unchanged(st, known) and old_packs.reuse(row, known):
                reused += 1
                rows.append(row)
                continue
            try:
                data = read_if_image(source / rel, by_extension, params.max_bytes)
            except NotRegularFile:  # replaced by a link or a fifo since its lstat
                ignored[IGNORED_SPECIAL] += 1
                continue
            except TooLarge:
                ignored[IGNORED_TOO_LARGE] += 1
                continue
            except OSError as exc:
                raise DataError(f"{source / rel}: cannot read source file: {exc}") from exc
            if data is None:
                ignored[IGNORED_NOT_IMAGE] += 1
                continue
            sha = hashlib.sha256(data).hexdigest()
            # Touched (or copied) but the same bytes: still in the pack it was, under its new
            # mtime; otherwise into a new pack.
            if not (known and known["sha256"] == sha and old_packs.reuse(row, known)):
                row.update(bytes=len(data), sha256=sha)
                writer.add(row, data, st.st_mtime_ns)
            rows.append(row)
        if not rows:
            raise DataError(f"{source}: no labelled images found (layout {layout.name}; "
                            f"{seen} files seen, ignored: {dict(ignored) or 'none'})")
        packs = old_packs.carry_over(tmp, writer, source)
        writer.close()  # every row has its pack from here on
        write_packs_listing(tmp, {**packs, **writer.written})
        write_index(tmp, rows)
        rows.sort(key=lambda r: r["path"])
        write_csv(manifest_tmp, MANIFEST_COLUMNS, ({k: r[k] for k in MANIFEST_COLUMNS}
                                                   for r in rows))

    keep(raw_dir)  # for the next run's packs (see io.keep)
    summary = summarise(layout, rows, seen, ignored, empty_class_folders(source, layout, rows))
    write_json(summary_path, summary)
    _logger.info("ingest: %s layout, %d of %d files ingested (%d unchanged since the last run), "
                 "classes %s, ignored %s", layout.name, len(rows), seen, reused,
                 summary["per_class"], summary["ignored"])
    return summary


def _check_class_name(label: str, source: Path, rel: PurePosixPath, layout: Layout) -> None:
    """DataError naming the class folder (the file, for file-name labels) if `label` is unusable.

    Checked at ingest so that a name the plots or reports cannot take fails in seconds, not
    after hours of training."""
    problem = class_name_problem(label)
    if problem is None:
        return
    root = next(r for r in layout.roots if rel.is_relative_to(r.path))
    where = source / root.path / label if root.mode == "class_folders" else source / rel
    kind = "folder" if root.mode == "class_folders" else "file"
    raise DataError(f"{_shown(where)}: class name {ascii(label)} cannot be used: {problem}. "
                    f"Rename the {kind}: class names must be printable UTF-8, at most "
                    f"{MAX_CLASS_NAME} characters, without / or \\")


def empty_class_folders(source: Path, layout: Layout, rows: list[dict]) -> list[str]:
    """Folders where class folders live that gave no image (empty, or no image files): they
    are not classes, and the user must hear that. Paths are relative to `source`."""
    used = {PurePosixPath(r["path"]) for r in rows}
    empty = []
    for root in layout.roots:
        if root.mode != "class_folders":
            continue
        for folder in _listing(source / root.path)[0]:
            rel = root.path / folder.name
            if not any(rel in p.parents for p in used):
                empty.append(rel.as_posix())
    return sorted(empty)


def summarise(layout: Layout, rows: list[dict], seen: int, ignored: Counter[str],
              empty_folders: list[str] = ()) -> dict:
    """The ingest report: what was found, what was taken, what was left and why."""
    per_class = Counter(r["label"] for r in rows)
    per_hint = Counter(r["split_hint"] for r in rows)
    classes = sorted(per_class)
    if len(classes) < 2:
        _logger.warning("ingest: only one class found (%s); a classifier needs at least two",
                        classes[0])
    for folder in empty_folders:
        _logger.warning("ingest: class folder %s holds no image: dropped, not a class", folder)
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
        "empty_class_folders": list(empty_folders),
    }
