"""What `auto` in params.yaml resolves to on this host: `train.workers` and `train.mixed_precision`.

Pure functions take what was read from the host (CPU flags, visible GPUs and their compute
capabilities); the readers at the bottom do the I/O. Measured on 2 CPU cores (benchmarks, rows 6
and 7): two Horovod workers sharing one host ran slower than one worker using every core, and
bfloat16 trained faster than float32 on a CPU with AVX512_BF16 at the same test accuracy, so
`auto` picks one worker per GPU (one on a CPU-only host) and the fastest precision the hardware
computes natively.

    >>> resolve_precision("auto", frozenset({"avx512_bf16"}), [])
    'bfloat16'
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from alexnet.params import ParamsError, host_slots

# CPU flags (as in /proc/cpuinfo) of native bfloat16 arithmetic: AVX512_BF16 dot products or
# AMX tiles. Without them TensorFlow emulates bfloat16 and it trains slower than float32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Tensor cores (float16 matrix units) start with compute capability 7.0 (Volta).
TENSOR_CORES = (7, 0)
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
_NVIDIA_DEVICE = re.compile(r"nvidia[0-9]+")


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU flags listed in /proc/cpuinfo's text (the union over its processors).

    x86 only: it reads the `flags` lines (aarch64 lists `Features`, and its bf16 is not
    detected), so native bfloat16 is found on x86 (avx512_bf16, amx_bf16) and other CPUs
    resolve `auto` to float32, which is always safe."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def resolve_precision(setting: bool | str, flags: frozenset[str],
                      gpus: Sequence[tuple[int, int]]) -> str:
    """float32, bfloat16 or float16 for `train.mixed_precision` given the host.

    `auto`: float16 when every GPU has tensor cores, float32 on GPUs without them; on a CPU-only
    host bfloat16 when the CPU computes it natively, else float32. `true` keeps its old meaning
    (float16 on GPU, bfloat16 on CPU), `false` is float32, and a precision's name is taken as is.
    """
    if setting is False:
        return "float32"
    if setting is True:
        return "float16" if gpus else "bfloat16"
    if setting != "auto":
        return str(setting)
    if gpus:
        return "float16" if all(tuple(cc) >= TENSOR_CORES for cc in gpus) else "float32"
    return "bfloat16" if flags & BF16_CPU_FLAGS else "float32"


def precision_policy(precision: str) -> str:
    """The Keras mixed-precision policy name of a resolved precision."""
    return POLICIES[precision]


def resolve_workers(workers: int | str, gpus: int, hosts: str = "localhost",
                    batch_size: int | None = None) -> int:
    """horovodrun's -np for `train.workers`: `auto` is one worker per GPU of this host (one on a
    CPU-only host), or one per slot of `train.hosts` when other hosts are listed; a number wins.

    Raises ParamsError (exit 78) when the global batch cannot be split into that many slices.
    """
    if workers != "auto":
        n = int(workers)
    elif hosts != "localhost":
        n = sum(host_slots(hosts).values())
    else:
        n = max(1, gpus)
    if batch_size is not None and batch_size % n:
        raise ParamsError(f"train.workers: auto resolved to {n} workers here, and "
                          f"train.batch_size ({batch_size}) is not a multiple of it: set "
                          "train.batch_size to a multiple of train.workers, or train.workers")
    return n


def visible_gpu_count(environ: Mapping[str, str], devices: Iterable[str],
                      cuda: bool | None = None) -> int:
    """NVIDIA GPUs a worker's TensorFlow would use: none when TensorFlow is built without CUDA
    (`cuda` False: tensorflow-cpu, make's default), else the /dev/nvidiaN device files narrowed
    by CUDA_VISIBLE_DEVICES as CUDA reads it (`cuda` None: cannot tell, the devices decide).

    CUDA takes ids up to the first one that names no GPU of the host (an id past the last GPU,
    -1, a repeated id, anything else), so "2,3" on 2 GPUs and "" and "-1" mean none. UUIDs
    (GPU-..., MIG-...) cannot be checked without the driver: each counts as one GPU, at most as
    many as are present. Cheap: no TensorFlow import.
    """
    if cuda is False:
        return 0
    present = sum(1 for d in devices if _NVIDIA_DEVICE.fullmatch(d))
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    seen: set[str] = set()
    for x in (v.strip() for v in visible.split(",")):
        number = x.isascii() and x.isdigit()  # str.isdigit alone accepts "²", int() does not
        valid = x.startswith(("GPU-", "MIG-")) or (number and int(x) < present)
        key = str(int(x)) if number else x
        if not valid or key in seen:
            break
        seen.add(key)
    return min(len(seen), present)


def cuda_build(build_info: str | None) -> bool | None:
    """Whether TensorFlow was built with CUDA, from the text of its generated
    tensorflow/python/platform/build_info.py (what tf.sysconfig.get_build_info() returns);
    None when there is no such text or it does not say."""
    m = re.search(r"""['"]is_cuda_build['"]\s*,\s*(True|False)\b""", build_info or "")
    return None if m is None else m.group(1) == "True"


def host_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This host's CPU flags (none when /proc/cpuinfo cannot be read)."""
    try:
        return cpu_flags(path.read_text(errors="replace"))
    except OSError:
        return frozenset()


def installed_cuda_build() -> bool | None:
    """cuda_build of the TensorFlow this Python would import, read without importing it (the
    launcher starts no TensorFlow). The build info is the file of the package on disk: the
    installed distribution's name would not do (tensorflow and tensorflow-cpu write the same
    package, so with both installed the last one's files win; on aarch64 `tensorflow` installs
    the CPU-only tensorflow-cpu-aws)."""
    spec = importlib.util.find_spec("tensorflow")  # a top-level name: finds, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    info = Path(list(spec.submodule_search_locations)[0]) / "python/platform/build_info.py"
    try:
        return cuda_build(info.read_text(errors="replace"))
    except OSError:
        return None


def host_gpu_count() -> int:
    """GPUs of this host the installed TensorFlow can use (visible_gpu_count)."""
    try:
        devices = os.listdir("/dev")
    except OSError:
        devices = []
    return visible_gpu_count(os.environ, devices, cuda=installed_cuda_build())
