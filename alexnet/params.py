"""Typed, frozen view of params.yaml, one dataclass per stage block.

A stage reads only its own block (`load_params(path).train`), so dvc.yaml's `params:` list is the
whole truth about what a stage depends on. Unknown or mistyped keys are errors, not silently
ignored: a typo in `trian.epochs` must not train 100 epochs on the default.

    >>> p = load_params("params.yaml")
    >>> p.train.epochs
    100
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """params.yaml (or an override) does not match the schema below."""


@dataclass(frozen=True)
class IngestParams:
    source: str = "data/sample"
    layout: Literal["auto", "class_folders", "presplit", "kaggle_flat"] = "auto"
    # Bytes per file: larger files are skipped (counted in reports/ingest.json), never copied.
    max_bytes: int = 50 * 2**20

    def __post_init__(self) -> None:
        _check(self.max_bytes >= 1, "ingest.max_bytes must be positive")


@dataclass(frozen=True)
class ValidateParams:
    min_side: int = 32
    max_pixels: int = 89_478_485
    max_bad_fraction: float = 0.25
    min_per_class: int = 10

    def __post_init__(self) -> None:
        _check(0 <= self.max_bad_fraction <= 1, "validate.max_bad_fraction must be in [0, 1]")
        _check(self.min_side >= 1 and self.max_pixels >= 1, "validate: sizes must be positive")


@dataclass(frozen=True)
class SplitParams:
    seed: int = 42
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        _check(0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
               and self.val_fraction + self.test_fraction < 1,
               "split: val_fraction and test_fraction must be in (0, 1) and sum to less than 1")


@dataclass(frozen=True)
class PreprocessParams:
    image_size: int = 227
    resize: Literal["squash", "crop", "pad"] = "squash"
    shard_size: int = 1024

    def __post_init__(self) -> None:
        # 67 px is the smallest input for which AlexNet's last max-pool still has a 1x1 output.
        _check(self.image_size >= 67, "preprocess.image_size must be at least 67 (AlexNet's minimum)")
        _check(self.shard_size >= 1, "preprocess.shard_size must be positive")


@dataclass(frozen=True)
class AugmentParams:
    rotation: float = 5.0
    width_shift: float = 0.1
    height_shift: float = 0.1
    horizontal_flip: bool = True

    def __post_init__(self) -> None:
        _check(0 <= self.rotation <= 180, "train.augment.rotation must be in [0, 180] degrees")
        _check(0 <= self.width_shift < 1 and 0 <= self.height_shift < 1,
               "train.augment shifts must be fractions in [0, 1)")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 100
    batch_size: int = 128
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.0
    warmup_epochs: int = 0
    dropout: float = 0.5
    # "auto": one worker per GPU, 1 on a CPU-only host (alexnet.hardware); or a number.
    workers: int | Literal["auto"] = "auto"
    hosts: str = "localhost"
    seed: int = 42
    deterministic: bool = False
    # float32 by default: bfloat16 trained faster here but trailed float32's test accuracy (bench
    # row 6), so it is not the default until parity is shown. "auto": bfloat16 on CPUs with
    # native bf16, float16 on GPUs with tensor cores, else float32 (alexnet.hardware);
    # true/false, or a precision's name.
    mixed_precision: bool | Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    patience: int = 0
    augment: AugmentParams = field(default_factory=AugmentParams)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs must be at least 1")
        if self.workers != "auto":  # auto is checked once resolved (alexnet.hardware)
            _check(self.workers >= 1, "train.workers must be at least 1")
            _check(self.batch_size >= self.workers and self.batch_size % self.workers == 0,
                   f"train.batch_size is the global batch, split evenly across workers: it must "
                   f"be a multiple of train.workers ({self.batch_size} images cannot be split "
                   f"into {self.workers} equal slices)")
        _check(self.seed >= 0, "train.seed must be >= 0")
        _check(self.learning_rate > 0, "train.learning_rate must be positive")
        _check(0 <= self.dropout < 1, "train.dropout must be in [0, 1)")
        _check(self.warmup_epochs >= 0 and self.patience >= 0,
               "train.warmup_epochs and train.patience must be >= 0")
        if self.hosts != "localhost":
            slots = host_slots(self.hosts)
            _check(self.workers == "auto" or sum(slots.values()) >= self.workers,
                   f"train.hosts {self.hosts!r} has {sum(slots.values())} slots in all, fewer than "
                   f"train.workers ({self.workers})")


# One `host:slots` entry of train.hosts: a hostname or IPv4 address (letters, digits, '.', '-';
# never a leading '-', which ssh would read as an option) and a slot count.
_HOST_SLOTS = re.compile(r"([A-Za-z0-9][A-Za-z0-9.-]*):([0-9]+)")


def host_slots(hosts: str) -> dict[str, int]:
    """Parse train.hosts ("gpu1:4,gpu2:4") into {host: slots}.

    It ends up on horovodrun's -H and from there in ssh command lines, so only hostname
    characters are accepted. Raises ParamsError naming the bad entry.
    """
    out: dict[str, int] = {}
    for entry in hosts.split(","):
        m = _HOST_SLOTS.fullmatch(entry)
        _check(m is not None, f"train.hosts: {entry!r} is not host:slots (expected 'localhost' "
                              "or comma-separated host:slots, e.g. 'gpu1:4,gpu2:4', hostname "
                              "characters only)")
        host, slots = m.group(1), int(m.group(2))
        _check(slots > 0, f"train.hosts: {entry!r}: slots must be positive")
        _check(host not in out, f"train.hosts: {host!r} is listed twice")
        out[host] = slots
    return out


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 256


@dataclass(frozen=True)
class PromoteParams:
    min_accuracy: float = 0.5
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_accuracy <= 1.0, "promote.min_accuracy must be in [0, 1]")
        _check(-1.0 <= self.min_improvement <= 1.0, "promote.min_improvement must be in [-1, 1]")


@dataclass(frozen=True)
class Params:
    ingest: IngestParams = field(default_factory=IngestParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    split: SplitParams = field(default_factory=SplitParams)
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    promote: PromoteParams = field(default_factory=PromoteParams)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ParamsError(message)


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where or 'params'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ParamsError(f"Unknown params key(s): {keys} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ParamsError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        # e.g. `int | Literal["auto"]`: the first arm that accepts the value wins.
        for arm in typing.get_args(hint):
            try:
                return _coerce(arm, value, where)
            except ParamsError:
                continue
        raise ParamsError(f"{where}: expected {_describe(hint)}, got {value!r}")
    return value


def _describe(hint: Any) -> str:
    """`int | Literal["auto"]` -> "an integer or 'auto'" (for error messages)."""
    words = {int: "an integer", bool: "true or false", float: "a number", str: "a string"}
    parts = []
    for arm in typing.get_args(hint):
        if typing.get_origin(arm) is Literal:
            parts.extend(repr(c) for c in typing.get_args(arm))
        else:
            parts.append(words.get(arm, str(arm)))
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]


def parse_params(data: dict[str, Any]) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`."""
    return _build(Params, data, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Raises ParamsError naming the file and the bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_params(data)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with dotted-key overrides applied ({"train.epochs": 3}).

    The result is validated, so an override with an unknown key or a wrong type is rejected
    before anything runs.
    """
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {dotted}: {key} is not a block")
        node[leaf] = value
    parse_params(out)
    return out
