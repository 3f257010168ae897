"""Atomic file output: a reader (or a killed run) never sees a half-written file.

Everything a stage writes goes through these helpers: the content is written to a temporary file in
the same directory, flushed, then renamed over the target (rename is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

from alexnet.errors import OutputError


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read once. Linux shows it in /proc/self/status; elsewhere it can only
    be read by setting it, which is done once here (a concurrent thread could create a file
    with umask 0 in between, so not on every write)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def usual_mode(directory: bool = False) -> int:
    """What open() / mkdir() would have created: mkstemp makes 0600 and mkdtemp 0700 files,
    which a teammate or a serving process could not read."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.fchmod(fd, usual_mode())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | Path, data: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def write_csv(path: str | Path, fieldnames: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as CSV atomically; returns the number of rows."""
    n = 0
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: what metrics code naturally produces.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


OUTPUT_MARKER = ".alexnet-output"  # in every directory atomic_dir writes
_logger = logging.getLogger(__name__)
# The temporary directories atomic_dir of this process is writing now. A temp named with this
# pid but not in here is a killed run's: in a container `alexnet` often gets the same pid.
_LIVE_TEMPS: set[Path] = set()


def check_output_dir(path: str | Path) -> Path:
    """`path` as a Path if the pipeline may write an output directory there; touches nothing.

    Absent, an empty directory, or a directory carrying OUTPUT_MARKER (an earlier run wrote it).

    Raises:
        OutputError: `path` exists and is not a directory (a file, a link), or is a non-empty
            directory this pipeline did not write.
    """
    path = Path(path)
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        raise OutputError(f"{path}: refusing to write an output directory here: it exists and is "
                          "not a directory (a file or a link). Choose another output path.")
    if path.is_dir() and any(path.iterdir()) and not (path / OUTPUT_MARKER).is_file():
        raise OutputError(f"{path}: refusing to write into this directory: it was not written by "
                          f"alexnet (no {OUTPUT_MARKER} in it) and is not empty. Choose another "
                          "output path, or move it away yourself.")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces the directory `path` if the block succeeds.

    Meant for a stage's own output directory (data/raw, data/cache, models/candidate). Every path
    is a command-line argument, so a mistyped one could name the user's images: a non-empty
    directory is replaced only if it carries OUTPUT_MARKER, i.e. an earlier atomic_dir wrote it.
    A killed run leaves `path` as it was, plus a hidden temporary directory named after its pid
    (`.NAME.tmp-PID-*`); a later run removes it once that process is gone, never while it runs
    (one with this process's pid is a killed run's unless this process is writing it).

    Raises:
        OutputError: `path` is not a directory (a file, a link), or is a non-empty directory
            this pipeline did not write.
    """
    path = check_output_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    old = path.with_name(f".{path.name}.tmp-old-{os.getpid()}")
    _LIVE_TEMPS.update((tmp, old))
    try:
        os.chmod(tmp, usual_mode(directory=True))
        (tmp / OUTPUT_MARKER).write_text("Written by alexnet; replaced as a whole by its next "
                                         "run.\n")
        yield tmp
        if path.exists():
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _LIVE_TEMPS.difference_update((tmp, old))


def remove_orphaned_temps(path: Path) -> None:
    """Remove the temporary siblings of `path` (`.NAME.tmp-PID-*`, `.NAME.tmp-old-PID`) whose
    owner process is gone. Another run writing the same output at the same time keeps its own.
    One named with this process's pid is live only while this process writes it (_LIVE_TEMPS):
    else a killed run that had the same pid (usual in a container) left it."""
    owned = re.compile(rf"\.{re.escape(path.name)}\.tmp-(?:old-)?([0-9]+)(?:-.*)?")
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        m = owned.fullmatch(stale.name)
        if not m:
            continue
        pid = int(m.group(1))
        if stale not in _LIVE_TEMPS if pid == os.getpid() else not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Put the file `src` at `dst` without copying its bytes when the filesystem allows it.

    A hard link (following a symlink, e.g. a DVC cache link, to its target) where possible, else
    a copy. Only for files nobody modifies in place: every output here is replaced, never edited.
    """
    try:
        _link_or_copy(src, dst)
    except FileNotFoundError:
        # The folder is created on the first file into it, not checked for every file (the
        # 25,000 images of a data/raw with one file each once made that 25,000 mkdir calls).
        parent = Path(dst).parent
        if parent.is_dir():  # it is `src` that is missing
            raise
        parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=True)
    except (FileExistsError, FileNotFoundError):  # copying over a file could write through a
        raise                                      # link into another one
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dst)
        st = os.stat(src)  # with the source's mtime, as a link would have: ingest trusts a
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))  # copy unread by its mtime


def kept_dir(path: str | Path) -> Path:
    """The hidden sibling `.NAME.kept` of the output directory `path`, where `keep` leaves the
    last run's files as hard links (a sibling: on the same filesystem, so links are possible)."""
    path = Path(path)
    return path.with_name(f".{path.name}.kept")


def previous_output(path: str | Path) -> Path:
    """Where the previous run's output directory `path` can be read: `path` itself when it is
    there, else its kept twin if this pipeline wrote it (OUTPUT_MARKER; else `path`, absent).
    `dvc repro` deletes a stage's outputs before running it (they are in DVC's cache); only the
    twin, which DVC does not track, survives that."""
    path = Path(path)
    kept = kept_dir(path)
    if path.is_dir() or kept.is_symlink() or not (kept / OUTPUT_MARKER).is_file():
        return path
    return kept


def keep(path: str | Path) -> Path | None:
    """Replace kept_dir(`path`) by hard links to every file of the output directory `path`;
    returns the kept directory, or None if it could not.

    So the next run can reuse what this one wrote without DVC's `persist` (which makes DVC copy
    every linked file of the output before each run, `unprotect`). Hard links cost no disk: the
    files are the output's, and once DVC commits it, its cache objects. They are only ever read
    and replaced as a whole, never written into (they are DVC's read-only cache objects too).

    Best effort: the stage's outputs are written when it runs, so a twin it cannot write (a
    folder alexnet did not write at its path, no disk for the copy fallback) only makes the next
    run reuse less. It warns, and the previous twin stays as it was (or absent); never fails.
    """
    path, kept = Path(path), kept_dir(path)
    try:
        with atomic_dir(kept) as tmp:
            for dirpath, _dirnames, filenames in os.walk(path):
                into = tmp / Path(dirpath).relative_to(path)
                for name in filenames:
                    if dirpath != str(path) or name != OUTPUT_MARKER:  # the twin has its own
                        link_or_copy(os.path.join(dirpath, name), into / name)
    except OutputError:
        _logger.warning("%s: not updated, the next run reuses less of this one: it was not "
                        "written by alexnet (a file, a link, or a folder without %s), so it is "
                        "left as it is; move it away to let the next runs reuse their files",
                        kept, OUTPUT_MARKER)
        return None
    except OSError as exc:
        _logger.warning("%s: not updated, the next run reuses less of this one (%s)", kept, exc)
        return None
    return kept


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def claim_output_dir(path: str | Path) -> Path:
    """Make `path` an output directory this pipeline may clean, and return it.

    For outputs that are kept and updated in place across runs (training checkpoints, DVCLive
    logs) rather than replaced by atomic_dir: the same rule applies. An absent or empty directory
    is created and marked with OUTPUT_MARKER; a marked one is returned as it is.

    Raises:
        OutputError: `path` is a link or a file, or a non-empty directory this pipeline did not
            write.
    """
    path = check_output_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / OUTPUT_MARKER).is_file():
        (path / OUTPUT_MARKER).write_text("Written by alexnet; its next run may clean it.\n")
    return path
