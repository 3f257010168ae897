"""Decide, file by file and then for the data set as a whole, which raw images are usable.

Per file (`validate_image`, pure): decode with Pillow by content, not extension, through the
same `load_rgb` the later stages use, so an accepted image is one they can load (JPEGs at 1/8
scale: the whole stream is still decoded, the pixels it yields are smaller). Per data set:
the same bytes under two labels are a label conflict (all copies quarantined); exact duplicates
within a class keep the first path. Nothing is deleted: rejected files are listed in a quarantine
report with a reason each, and raw files are never modified.

    >>> validate(Path("data/raw"), Path("data/manifest.csv"), Path("data/validated.csv"),
    ...          Path("reports/quarantine.csv"), Path("reports/validate.json"), ValidateParams())
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import sys
import warnings
from collections import Counter, defaultdict, deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

from PIL import ExifTags, Image, UnidentifiedImageError
from tqdm import tqdm

from alexnet.errors import DataError
from alexnet.fingerprint import fingerprint
from alexnet.images import OPEN_FORMATS, load_rgb, open_image
from alexnet.ingest import image_signature
from alexnet.io import atomic_open, read_csv, write_csv, write_json
from alexnet.packs import Member, members
from alexnet.parallel import process_pool, use_pool
from alexnet.params import ValidateParams

_logger = logging.getLogger(__name__)

VALIDATED_COLUMNS = ("path", "label", "split_hint", "sha256", "bytes", "width", "height",
                     "format", "notes")
QUARANTINE_COLUMNS = ("path", "label", "sha256", "reason", "detail")
# The verdict memo: a file's verdict depends only on its bytes, its extension (the
# extension-mismatch note), the params it reads and the code (`memo_fingerprint`), so a rerun
# decodes only what is new.
MEMO_COLUMNS = ("sha256", "suffix", "fingerprint", "ok", "reason", "detail", "width", "height",
                "format", "notes")

# Reasons a file is rejected (quarantine CSV `reason`).
EMPTY = "empty file"
NOT_IMAGE = "not an image"
CORRUPT = "truncated or corrupt"
TOO_MANY_PIXELS = "too many pixels"
TOO_SMALL = "too small"
LABEL_CONFLICT = "label conflict"
DUPLICATE = "duplicate"  # recorded, but not counted as bad

# Formats accepted by content; the extensions each is normally stored under.
FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"}, "MPO": {".jpg", ".jpeg", ".mpo"},
    "PNG": {".png"}, "GIF": {".gif"}, "BMP": {".bmp", ".dib"}, "DIB": {".bmp", ".dib"},
    "WEBP": {".webp"}, "TIFF": {".tif", ".tiff"},
}
# What a file that is not an image looks like, by its first bytes: named in the quarantine
# detail instead of quoting the bytes (they may be a secret).
CONTENT_SIGNATURES = (
    (b"%!PS", "PostScript"), (b"%PDF", "PDF"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"), (b"\x7fELF", "an ELF executable"), (b"\x89HDF", "HDF5 data"),
    (b"<!doctype html", "HTML"), (b"<html", "HTML"), (b"<?xml", "XML"), (b"<svg", "SVG"),
)
GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
CHUNKSIZE = 32
# JPEGs are checked at the smallest scale libjpeg decodes to (load_rgb's draft): 1/8.
DRAFT_SIZE = (1, 1)


@dataclass(frozen=True)
class Verdict:
    """What `validate_image` found. `reason` is "" when ok; `notes` lists accepted oddities."""

    ok: bool
    reason: str
    detail: str
    width: int = 0
    height: int = 0
    format: str = ""
    notes: tuple[str, ...] = ()


def _reject(reason: str, detail: str, width: int = 0, height: int = 0, fmt: str = "") -> Verdict:
    return Verdict(False, reason, detail, width, height, fmt)


def _notes(img: Image.Image, path: Path) -> tuple[str, ...]:
    """Accepted oddities, read from the header and frame count before decoding."""
    notes = []
    mode = img.mode
    if mode == "CMYK":
        notes.append("cmyk")
    if mode in GRAYSCALE_MODES:
        notes.append("grayscale")
    if mode in ("P", "PA"):
        notes.append("palette")
    if mode in ALPHA_MODES or "transparency" in img.info:
        notes.append("alpha")
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation not in (None, 1):
        notes.append("exif-rotated")
    if getattr(img, "n_frames", 1) > 1:
        notes.append("animated")
    if path.suffix.lower() not in FORMAT_EXTENSIONS.get(img.format or "", set()):
        notes.append("extension-mismatch")
    return tuple(notes)


def upright_size(width: int, height: int, orientation: object) -> tuple[int, int]:
    """(width, height) after EXIF rotation: orientations 5-8 turn the image a quarter."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def describe_content(head: bytes) -> str:
    """What the first bytes of a non-image file look like ("PDF", "HTML", "text", "binary data"),
    without quoting them."""
    start = head.lstrip().lower()
    for magic, kind in CONTENT_SIGNATURES:
        if start.startswith(magic.lower()):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        if exc.start < len(head) - 3:
            return "binary data"
        text = head[:exc.start].decode("utf-8")
    return "text" if all(c.isprintable() or c in "\t\r\n\f" for c in text) else "binary data"


def validate_image(path: Path | Member, params: ValidateParams) -> Verdict:
    """Decide whether one file (or one image of a pack in data/raw) is a usable image, by its
    content.

    Checks, in order: empty file; not an image (no format Pillow accepts here); too many pixels
    (width*height > params.max_pixels, or Pillow's decompression-bomb warning); truncated or
    corrupt (decoding the whole stream via `load_rgb` fails); too small (shorter side <
    params.min_side). Width and height are the full image's after EXIF rotation.

    Raises:
        DataError: a pack's image is not the one the manifest records (alexnet.packs.Member):
            data/raw changed after ingest, which is no verdict on the image.
    """
    if isinstance(path, Member):
        data = path.read()
        size, head, name = len(data), data[:512], Path(path.path)
        source: Callable[[], Path | BinaryIO] = functools.partial(io.BytesIO, data)
    else:
        path = name = Path(path)
        source = functools.partial(Path, path)
        try:
            size = path.stat().st_size
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            return _reject(CORRUPT, f"cannot read: {exc}")
    if size == 0:
        return _reject(EMPTY, "0 bytes")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(source()) as img:
                fmt, (width, height) = img.format or "", img.size
                if width * height > params.max_pixels:
                    return _reject(TOO_MANY_PIXELS, f"{width}x{height} = {width * height} pixels "
                                   f"exceeds max_pixels {params.max_pixels}", width, height, fmt)
                notes = _notes(img, name)
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _reject(TOO_MANY_PIXELS, str(exc))
    except UnidentifiedImageError:
        signature = image_signature(head)
        if signature is None:
            return _reject(NOT_IMAGE, f"no image signature of {', '.join(OPEN_FORMATS)}; "
                           f"the content looks like {describe_content(head)}")
        return _reject(CORRUPT, f"starts like a {signature} but Pillow cannot read its header")
    except Exception as exc:  # Pillow raises many types (SyntaxError, struct.error...) here
        return _reject(CORRUPT, f"header: {type(exc).__name__}: {exc}")

    try:
        # JPEGs at libjpeg's smallest scale (draft, 1/8): the whole entropy-coded stream is still
        # read, so truncated or corrupt files fail as in a full decode, but most of the IDCT and
        # colour work is skipped (preprocess decodes the pixels it keeps).
        rgb = load_rgb(source(), max_pixels=params.max_pixels, draft_size=DRAFT_SIZE)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _reject(TOO_MANY_PIXELS, str(exc), width, height, fmt)
    except Exception as exc:  # any failure to decode the whole file makes it unusable
        return _reject(CORRUPT, f"decode: {type(exc).__name__}: {exc}", width, height, fmt)
    # A scaled JPEG decode is smaller than the file: its size is the header's, turned upright.
    width, height = upright_size(width, height, orientation) if fmt == "JPEG" else rgb.size
    rgb.close()
    if min(width, height) < params.min_side:
        return _reject(TOO_SMALL, f"{width}x{height}: shorter side < min_side {params.min_side}",
                       width, height, fmt)
    return Verdict(True, "", "", width, height, fmt, notes)


# --- data-set rules (pure) --------------------------------------------------------------------

def dataset_rules(rows: Sequence[dict]) -> dict[str, tuple[str, str]]:
    """Label conflicts and within-class duplicates, from the manifest's sha256 alone.

    Returns {path: (reason, detail)} for every path to quarantine: all copies of bytes that appear
    under two or more labels ("label conflict", detail names the other labels/paths), and every
    copy but the first (sorted by path) of bytes repeated within one label ("duplicate", detail:
    the kept path).
    """
    by_sha: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_sha[row["sha256"]].append(row)
    out: dict[str, tuple[str, str]] = {}
    for copies in by_sha.values():
        if len(copies) < 2:
            continue
        copies = sorted(copies, key=lambda r: r["path"])
        if len({r["label"] for r in copies}) > 1:
            for row in copies:
                others = [f"{o['path']} ({o['label']})" for o in copies
                          if o["label"] != row["label"]]
                out[row["path"]] = (LABEL_CONFLICT, "same bytes as " + ", ".join(others[:5])
                                    + (f" and {len(others) - 5} more" if len(others) > 5 else ""))
        else:
            for row in copies[1:]:
                out[row["path"]] = (DUPLICATE, copies[0]["path"])
    return out


# --- running it over the manifest: the I/O edge -----------------------------------------------

def _check_one(job: tuple[Member, ValidateParams]) -> Verdict:
    return validate_image(job[0], job[1])


def _bounded_map(executor: Executor, jobs: Iterable[tuple[Member, ValidateParams]],
                 window: int) -> Iterator[Verdict]:
    """Like executor.map with chunks of CHUNKSIZE, in order, but with at most `window` chunks
    in flight, so memory stays bounded however long the manifest."""
    def chunks() -> Iterator[list]:
        batch: list = []
        for job in jobs:
            batch.append(job)
            if len(batch) == CHUNKSIZE:
                yield batch
                batch = []
        if batch:
            yield batch

    pending: deque[Future] = deque()
    for batch in chunks():
        pending.append(executor.submit(_check_chunk, batch))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


def _check_chunk(batch: list[tuple[Member, ValidateParams]]) -> list[Verdict]:
    return [_check_one(job) for job in batch]


def _memo_key(row: dict) -> tuple[str, str]:
    return row["sha256"], PurePosixPath(row["path"]).suffix.lower()


def memo_fingerprint(params: ValidateParams) -> str:
    """What produced a verdict, besides the file: the per-file params and this module's code."""
    return fingerprint("alexnet.validate", {"min_side": params.min_side,
                                            "max_pixels": params.max_pixels})


def read_memo(path: Path | None, params: ValidateParams) -> dict[tuple[str, str], Verdict]:
    """Verdicts of an earlier run by the same code and validation params (empty if none).

    Rows of other code or params, and memos of an older format (no fingerprint), are ignored."""
    if path is None or not Path(path).is_file():
        return {}
    key = memo_fingerprint(params)
    return {(r["sha256"], r["suffix"]): Verdict(r["ok"] == "1", r["reason"], r["detail"],
                                                int(r["width"]), int(r["height"]), r["format"],
                                                tuple(filter(None, r["notes"].split(";"))))
            for r in read_csv(path) if r.get("fingerprint") == key}


def write_memo(path: Path, verdicts: dict[tuple[str, str], Verdict],
               params: ValidateParams) -> None:
    key = memo_fingerprint(params)
    write_csv(path, MEMO_COLUMNS, (
        {"sha256": sha, "suffix": suffix, "fingerprint": key, "ok": int(v.ok), "reason": v.reason,
         "detail": v.detail, "width": v.width, "height": v.height, "format": v.format,
         "notes": ";".join(v.notes)} for (sha, suffix), v in sorted(verdicts.items())))


def _verdicts(raw_dir: Path, rows: Sequence[dict], params: ValidateParams,
              workers: int) -> Iterator[Verdict]:
    where = members(raw_dir, rows)  # DataError if raw_dir does not hold one of them
    jobs = ((where[row["path"]], params) for row in rows)
    if not use_pool(len(rows), workers):
        yield from map(_check_one, jobs)
        return
    with process_pool(workers) as pool:
        yield from _bounded_map(pool, jobs, window=4 * workers)


def validate(raw_dir: Path, manifest_path: Path, validated_path: Path, quarantine_path: Path,
             summary_path: Path, params: ValidateParams, workers: int | None = None,
             memo_path: Path | None = None) -> dict:
    """Validate every file in the manifest; write the validated list, quarantine and summary.

    All three outputs are written (atomically) before the data-set thresholds are checked, so a
    failing run still leaves its reports. With `memo_path`, verdicts of an earlier run are reused
    for files whose bytes did not change, and the memo is rewritten for the current files.

    Returns:
        the summary: total, accepted, quarantined, bad_fraction, by_reason, notes, per_class,
        classes.
    Raises:
        DataError: bad_fraction > params.max_bad_fraction (duplicates are not bad), a class with
            fewer than params.min_per_class accepted images, fewer than two classes, or an
            empty manifest.
    """
    raw_dir = Path(raw_dir)
    rows = sorted(read_csv(manifest_path), key=lambda r: r["path"])
    workers = max(1, workers or os.cpu_count() or 1)
    rules = dataset_rules(rows)
    known = read_memo(memo_path, params)
    keys = [_memo_key(r) for r in rows]
    todo = {k: r for k, r in zip(keys, rows) if k not in known}  # one decode per content
    decoded = _verdicts(raw_dir, list(todo.values()), params, workers)
    fresh = dict(zip(todo, tqdm(decoded, total=len(todo), desc="validate", unit="img",
                                file=sys.stderr, disable=not sys.stderr.isatty())))
    verdict_of = {**known, **fresh}
    _logger.info("validate: %d file(s) decoded, %d verdict(s) reused", len(fresh),
                 len(rows) - len(fresh))
    by_reason: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    per_class: Counter[str] = Counter({row["label"]: 0 for row in rows})

    with atomic_open(validated_path, newline="") as vf, \
            atomic_open(quarantine_path, newline="") as qf:
        accepted_w = csv.DictWriter(vf, fieldnames=VALIDATED_COLUMNS)
        quarantine_w = csv.DictWriter(qf, fieldnames=QUARANTINE_COLUMNS)
        accepted_w.writeheader()
        quarantine_w.writeheader()
        for row, key in zip(rows, keys):
            verdict = verdict_of[key]
            # A file's own defect comes first; the data-set rules apply to decodable images.
            reason, detail = (verdict.reason, verdict.detail) if not verdict.ok \
                else rules.get(row["path"], ("", ""))
            if reason:
                by_reason[reason] += 1
                quarantine_w.writerow({"path": row["path"], "label": row["label"],
                                       "sha256": row["sha256"], "reason": reason,
                                       "detail": detail})
                continue
            per_class[row["label"]] += 1
            notes.update(verdict.notes)
            accepted_w.writerow({"path": row["path"], "label": row["label"],
                                 "split_hint": row.get("split_hint", ""), "sha256": row["sha256"],
                                 "bytes": row["bytes"], "width": verdict.width,
                                 "height": verdict.height, "format": verdict.format,
                                 "notes": ";".join(verdict.notes)})

    if memo_path is not None:
        write_memo(memo_path, {k: verdict_of[k] for k in keys}, params)

    summary = summarise(len(rows), by_reason, notes, per_class)
    write_json(summary_path, summary)
    _logger.info("validate: %d of %d accepted, %d quarantined %s, bad fraction %.3f",
                 summary["accepted"], summary["total"], summary["quarantined"],
                 summary["by_reason"], summary["bad_fraction"])
    check_thresholds(summary, params, quarantine_path)
    return summary


def summarise(total: int, by_reason: Counter[str], notes: Counter[str],
              per_class: Counter[str]) -> dict:
    quarantined = sum(by_reason.values())
    bad = quarantined - by_reason.get(DUPLICATE, 0)
    return {
        "total": total,
        "accepted": total - quarantined,
        "quarantined": quarantined,
        "bad_fraction": bad / total if total else 0.0,
        "by_reason": {k: by_reason[k] for k in sorted(by_reason)},
        "notes": {k: notes[k] for k in sorted(notes)},
        "per_class": {k: per_class[k] for k in sorted(per_class)},
        "classes": sorted(k for k, n in per_class.items() if n > 0),
    }


def check_thresholds(summary: dict, params: ValidateParams, quarantine_path: Path) -> None:
    """Raise DataError if the data set as a whole is not usable."""
    if summary["total"] == 0:
        raise DataError("validate: the manifest lists no images")
    if len(summary["per_class"]) < 2:  # training would fail only after split and preprocess
        found = ", ".join(repr(c) for c in summary["per_class"])
        raise DataError(f"validate: only one class found ({found}); a classifier needs at least "
                        "two: give the source one folder of images per class")
    if summary["bad_fraction"] > params.max_bad_fraction:
        raise DataError(
            f"validate: {summary['bad_fraction']:.1%} of the files are unusable "
            f"(max_bad_fraction {params.max_bad_fraction:.1%}; by reason {summary['by_reason']}); "
            f"see {quarantine_path}")
    short = {k: n for k, n in summary["per_class"].items() if n < params.min_per_class}
    if short:
        listed = ", ".join(f"class {k!r} has {n}" for k, n in short.items())
        raise DataError(f"validate: too few usable images: {listed} "
                        f"(min_per_class {params.min_per_class}); see {quarantine_path}")
