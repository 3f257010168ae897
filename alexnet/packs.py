"""data/raw as packs: the ingested images inside a few uncompressed tar files, not one file each.

DVC walks and looks up every file of an output or dependency folder several times per stage run
(issue 15: six times per directory dep, ~20 us a file), and `dvc push` sends one object per file.
With one file per image, a 25,000-image data/raw cost seconds of DVC bookkeeping on every
`dvc repro`, and a million images minutes. So ingest appends images to packs:

    data/raw/<sha256 of the pack>.tar    POSIX (pax) tar, member name = the manifest's path
    data/raw/index.csv                   each image: path, bytes, sha256, source mtime, pack, offset
    data/raw/packs.csv                   how ingest left each pack (PACK_COLUMNS)

A pack is named by its content and never written again: a run links the previous run's packs it
still uses, writes the new images into new packs, and rewrites only a pack most of whose bytes
are images gone from the source. `tar -tvf` or `tar -xf` show the images as files (it is also
the WebDataset shard format). Which pack holds an image depends on when it was ingested; the
manifest (alexnet.ingest) does not: it lists the images, the index in data/raw says where they
are, so rebuilding data/raw from scratch changes no stage after ingest.

    >>> with PackWriter(Path("data/raw")) as packs:
    ...     packs.add(row, data, mtime_ns)      # sets row["pack"] and row["offset"]
    >>> members(Path("data/raw"), manifest_rows)[path].read()  # bytes, checked against sha256
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from alexnet.errors import DataError
from alexnet.io import file_sha256, read_csv, usual_mode, write_csv

PACK_BYTES = 64 << 20  # a pack is closed once it holds this much (WebDataset's usual shard size)
PACK_SUFFIX = ".tar"
INDEX = "index.csv"  # in the raw folder: where each image is
# mtime_ns: the source file's when ingest read it (the next run reads it again only if its size
# or mtime changed); kept here, not in the manifest, which so depends on the images alone.
INDEX_COLUMNS = ("path", "bytes", "sha256", "mtime_ns", "pack", "offset")
PACKS = "packs.csv"  # in the raw folder: how ingest left each pack (see trusted_packs)
# bytes and mtime_ns: the pack file's, for pack_intact; image_bytes: of all the images in it,
# those the manifest no longer lists included (ingest writes a pack again when they are most).
PACK_COLUMNS = ("pack", "bytes", "mtime_ns", "image_bytes")
PACK_NAME = re.compile(r"[0-9a-f]{64}\.tar")  # a listing naming anything else is refused


@dataclass(frozen=True)
class PackInfo:
    bytes: int
    mtime_ns: int
    image_bytes: int


@dataclass(frozen=True)
class Member:
    """One image inside a pack: where its bytes are, and what they must hash to."""

    pack: Path
    offset: int
    size: int
    sha256: str
    path: str  # the manifest's path: for messages, and its extension

    @classmethod
    def of(cls, raw_dir: Path, row: dict) -> Member:
        """The image an index row (path, bytes, sha256, pack, offset) names, inside `raw_dir`.

        Raises:
            DataError: the row names something else than a pack of `raw_dir`.
        """
        if not PACK_NAME.fullmatch(row.get("pack") or ""):
            raise DataError(f"{row.get('path')}: {raw_dir} names no pack for it "
                            f"({row.get('pack')!r}): written by another version? Run ingest "
                            "again (`dvc repro` does)")
        return cls(Path(raw_dir) / row["pack"], int(row["offset"]), int(row["bytes"]),
                   row["sha256"], row["path"])

    def __str__(self) -> str:
        return f"{self.pack} ({self.path})"

    def read(self) -> bytes:
        """The image's bytes.

        Raises:
            DataError: the pack is missing, too short, or holds other bytes than the manifest's
                sha256 (data/raw changed after ingest wrote it: `dvc repro` runs ingest again).
        """
        try:
            with open(self.pack, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(self.size)
        except OSError as exc:
            raise DataError(f"{self}: cannot read: {exc}") from exc
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise DataError(f"{self}: its bytes are not the ones ingest recorded (sha256 "
                            f"{self.sha256[:12]}...): {self.pack.parent} was changed after "
                            "ingest wrote it; run ingest again (`dvc repro` does)")
        return data

    def open(self) -> BinaryIO:
        """The image as a file object (what Pillow opens)."""
        return io.BytesIO(self.read())


class _Hashing:
    """A write-only file that hashes what goes through it (tarfile needs write and tell)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size


class PackWriter:
    """Writes images into new packs in `directory`, in the order given.

    A pack is closed when it reaches `limit` bytes (and at the end), then renamed to its sha256;
    only then do the rows of its images get their "pack". Every pack this writer closed is in
    `written`.
    """

    def __init__(self, directory: Path, limit: int = PACK_BYTES) -> None:
        self.directory, self.limit = Path(directory), limit
        self.written: dict[str, PackInfo] = {}
        self._tar: tarfile.TarFile | None = None
        self._rows: list[dict] = []

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:
            self._file.close()
            os.unlink(self._tmp)

    def add(self, row: dict, data: bytes, mtime_ns: int) -> None:
        """Append `data` as the member row["path"]; sets row["offset"] now, row["pack"] when
        its pack is closed."""
        if self._tar is None:
            fd, self._tmp = tempfile.mkstemp(prefix=".pack-", suffix=".tmp", dir=self.directory)
            os.fchmod(fd, usual_mode())
            self._file = os.fdopen(fd, "wb")
            self._hashing = _Hashing(self._file)
            self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)
            self._image_bytes = 0
        info = tarfile.TarInfo(row["path"])
        info.size, info.mtime, info.mode = len(data), mtime_ns // 1_000_000_000, 0o644
        self._tar.addfile(info, io.BytesIO(data))
        self._image_bytes += len(data)
        # The data ends the member, padded to tar's 512-byte blocks.
        row["offset"] = self._tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        self._rows.append(row)
        if self._tar.offset >= self.limit:
            self._close_pack()

    def close(self) -> None:
        if self._tar is not None:
            self._close_pack()

    def _close_pack(self) -> None:
        assert self._tar is not None
        self._tar.close()  # the end-of-archive blocks; the file object stays open
        self._file.close()
        name = self._hashing.digest.hexdigest() + PACK_SUFFIX
        target = self.directory / name
        os.replace(self._tmp, target)
        st = target.stat()
        self.written[name] = PackInfo(st.st_size, st.st_mtime_ns, self._image_bytes)
        for row in self._rows:
            row["pack"] = name
        self._tar, self._rows = None, []


def write_index(raw_dir: Path, rows: list[dict]) -> None:
    """index.csv: where each of `rows` (sorted by path) is in raw_dir's packs."""
    write_csv(Path(raw_dir) / INDEX, INDEX_COLUMNS,
              ({k: r[k] for k in INDEX_COLUMNS} for r in sorted(rows, key=lambda r: r["path"])))


def read_index(raw_dir: Path) -> dict[str, dict]:
    """path -> index row of raw_dir; empty if it has no index."""
    path = Path(raw_dir) / INDEX
    return {r["path"]: r for r in read_csv(path)} if path.is_file() else {}


def members(raw_dir: Path, rows: Iterable[dict]) -> dict[str, Member]:
    """path -> where its image is in raw_dir, for each of `rows` (manifest, validated or splits
    rows: path and sha256).

    Raises:
        DataError: raw_dir does not hold one of them with the same sha256 (it was written by
            another ingest run than the listing).
    """
    rows = list(rows)
    index = read_index(raw_dir) if rows else {}
    out = {}
    for row in rows:
        entry = index.get(row["path"])
        if entry is None or entry["sha256"] != row["sha256"]:
            raise DataError(f"{row['path']}: {raw_dir} does not hold this image (sha256 "
                            f"{row['sha256'][:12]}...): it was written by another ingest run "
                            "than the listing read; run the pipeline again (`dvc repro` does)")
        out[row["path"]] = Member.of(raw_dir, entry)
    return out


def write_packs_listing(raw_dir: Path, packs: dict[str, PackInfo]) -> None:
    write_csv(Path(raw_dir) / PACKS, PACK_COLUMNS,
              ({"pack": name, "bytes": p.bytes, "mtime_ns": p.mtime_ns,
                "image_bytes": p.image_bytes} for name, p in sorted(packs.items())))


def trusted_packs(raw_dir: Path) -> dict[str, PackInfo]:
    """The packs listing ingest left in `raw_dir` (name -> PackInfo); empty if none. A name
    that is not a pack's is left out: a pack it does not list is never trusted."""
    path = Path(raw_dir) / PACKS
    if not path.is_file():
        return {}
    return {r["pack"]: PackInfo(int(r["bytes"]), int(r["mtime_ns"]), int(r["image_bytes"]))
            for r in read_csv(path) if PACK_NAME.fullmatch(r["pack"])}


def pack_intact(path: Path, recorded: PackInfo | None) -> bool:
    """Whether the pack at `path` still holds what ingest wrote, reading it only if it must.

    Trusted unread while it has the size and mtime ingest recorded (DVC's hard links keep
    both). One with another mtime (`dvc pull` or `dvc checkout` wrote it, or it was edited) is
    hashed: intact if its sha256 is its name, and then given the recorded mtime back, so it is
    read once."""
    if recorded is None or not path.name.endswith(PACK_SUFFIX):
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != recorded.bytes:
        return False
    if st.st_mtime_ns == recorded.mtime_ns:
        return True
    try:
        if file_sha256(path) != path.name.removesuffix(PACK_SUFFIX):
            return False
    except OSError:
        return False
    # Metadata only; a pack we cannot touch stays as it is, and is read again next time.
    with contextlib.suppress(OSError):
        os.utime(path, ns=(st.st_atime_ns, recorded.mtime_ns))
    return True
