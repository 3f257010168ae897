"""Get a recorded run back by its flow-run name: its params.yaml, dvc.lock and outputs.

    python -m flows.reproduce amber-hyena       # in the workspace, or in a `git clone` of it

DVC's own commands, in order (README, "Reproduce a past run"):

1. the run's git ref, if this repository does not have it: `dvc exp pull --no-cache GIT_REMOTE
   NAME` (GIT_REMOTE: `exp.git_remote` of DVC's config, default `origin`);
2. `dvc exp apply NAME`: its params.yaml and dvc.lock into the working tree;
3. its outputs: `dvc pull` from the default DVC remote when one is configured, else `dvc checkout`
   from this workspace's DVC cache.

What it adds to them: when the data is nowhere DVC looked, it says which run, where DVC looked and
the one command that fixes it (in a clone on the same machine, point it at the DVC cache of the
workspace that recorded the run; with a remote, point the remote at where runs were pushed),
instead of DVC's list of missing md5s; when the remote cannot be read (no keys for an S3
bucket, say), it names the remote and the settings that give access. Exit code 0 when the run
is back, 78 (alexnet/errors.py) when something must be configured first.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from alexnet.errors import EXIT_CONFIG
from tasks.stages import dvc_env

# A DVC experiment name (a git ref component); Prefect's flow-run names are `adjective-animal`.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_CHECKOUT_FAILED = "Checkout failed for following targets:"
# A remote that was read and does not hold the data: DVC's list of missing cache files (its
# "Checkout failed" list is read by missing_targets), or (S3, when DVC lists the remote first) the
# bucket itself is not there.
_NOT_THERE = ("missing cache files", "nosuchbucket", "bucket does not exist")
# DVC cannot even talk to the remote: its plugin (dvc-s3 for s3://) is not installed.
_MISSING_DEPS = re.compile(r"requires these missing dependencies: (\[[^\]]*\])")


class Refused(Exception):
    """The run cannot be brought back until the user configures something; the message says what."""


@dataclass(frozen=True)
class Done:
    name: str
    fetched_from: str | None  # git remote the ref came from, None when it was here already
    data_from: str  # "DVC remote NAME (URL)" or "the DVC cache DIR"


def _dvc(cmd: list[str], workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=workspace, env=dvc_env(), text=True, capture_output=True)


def _out(cmd: list[str], workspace: Path) -> str:
    proc = _dvc(cmd, workspace)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def dvc_config(workspace: Path) -> dict[str, str]:
    """DVC's merged config (project, local, global, system) as {"remote.store.url": ...}: one
    `dvc` start (about a second of CPU) instead of one per key."""
    listed = _out(["dvc", "config", "--list"], workspace)
    return dict(line.partition("=")[::2] for line in listed.splitlines() if "=" in line)


def _first_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln]
    return (errors or lines or [f"exit code {proc.returncode}"])[0]


def missing_targets(output: str) -> list[str]:
    """The outputs DVC could not check out, from its "Checkout failed for following targets:"."""
    if _CHECKOUT_FAILED not in output:
        return []
    targets = []
    for line in output.split(_CHECKOUT_FAILED, 1)[1].splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(("Is your cache", "<http", "ERROR")):
            break
        targets.append(line)
    return targets


def recorded_cache(workspace: Path, git_remote: str) -> str:
    """The DVC cache of the workspace this clone came from, when `git_remote` is a local folder
    that has one; else a placeholder for the user to fill in."""
    url = _out(["git", "remote", "get-url", git_remote], workspace)
    parsed = urlparse(url)
    path = Path(parsed.path if parsed.scheme == "file" else url) if url else None
    if path is not None and not parsed.netloc and (workspace / path / ".dvc/cache").is_dir():
        return str((workspace / path / ".dvc/cache").resolve())
    return "<the workspace that recorded the run>/.dvc/cache"


def missing_dependencies(output: str) -> str | None:
    """The DVC plugins DVC said it needs to read a remote ("['s3']"), None when it said nothing
    of the sort."""
    found = _MISSING_DEPS.search(output)
    return found.group(1) if found else None


def not_there(output: str) -> bool:
    """Whether DVC's output says the data is not where it looked (rather than that it could not
    look: no keys, no connection)."""
    return bool(missing_targets(output)) or any(s in output.lower() for s in _NOT_THERE)


def access_fix(remote: str, url: str) -> list[str]:
    """The settings that let DVC read remote `remote` (at `url`): keys in .dvc/config.local."""
    if urlparse(url).scheme == "s3":
        return [f"dvc remote modify --local {remote} access_key_id KEY_ID",
                f"dvc remote modify --local {remote} secret_access_key SECRET",
                "(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws/credentials), and for an "
                f"S3-compatible store other than AWS: dvc remote modify {remote} endpointurl URL"]
    return [f"dvc remote modify --local {remote} OPTION VALUE   # its credentials "
            "(`dvc remote modify --help`)"]


def location_fix(remote: str, recorded: str | None) -> list[str]:
    """Where else the run's data can be: the remote the recording workspace pushed to (its
    `dvc remote list`), or, for a clone on the same machine, that workspace's cache."""
    fix = [f"dvc remote modify --local {remote} url URL   # the remote the recording workspace "
           "pushes to (`dvc remote list` there)"]
    if recorded:
        fix.append(f"dvc remote add --local -d recorded {recorded}   # or its DVC cache")
    return fix


def has_experiment(workspace: Path, name: str) -> bool:
    refs = _out(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], workspace)
    return any(ref.endswith(f"/{name}") for ref in refs.splitlines())


def fetch_experiment(workspace: Path, name: str, git_remote: str) -> None:
    """`dvc exp pull --no-cache GIT_REMOTE NAME`: the run's git ref only (outputs come later)."""
    if git_remote not in _out(["git", "remote"], workspace).split():
        raise Refused(f"run {name!r} is not in this repository, and it has no git remote "
                      f"{git_remote!r} to fetch it from. `dvc exp list --all-commits "
                      "--name-only` lists the runs here; `git remote add "
                      f"{git_remote} URL` (or `dvc config exp.git_remote NAME`) names where "
                      "the run was pushed.")
    proc = _dvc(["dvc", "exp", "pull", "--no-cache", git_remote, name], workspace)
    if proc.returncode != 0 or not has_experiment(workspace, name):
        url = _out(["git", "remote", "get-url", git_remote], workspace)
        raise Refused(f"run {name!r} is neither in this repository nor on git remote "
                      f"{git_remote!r} ({url}): {_first_error(proc)}. Runs reach a git remote "
                      "only with `dvc config exp.auto_push true` (README, \"Reproduce a past "
                      "run\"); `dvc exp list --all-commits --name-only " f"{git_remote}` "
                      "lists the runs there.")


def restore_outputs(workspace: Path, name: str, git_remote: str, config: dict[str, str]) -> str:
    """`dvc pull` (a default DVC remote is configured) or `dvc checkout` (none is); returns
    where the data came from. Raises Refused, naming what to configure, when it is missing."""
    remote = config.get("core.remote", "")
    if remote:
        url = config.get(f"remote.{remote}.url") or "?"
        proc, looked = _dvc(["dvc", "pull"], workspace), f"the DVC remote {remote!r} ({url})"
    else:
        proc, looked = _dvc(["dvc", "checkout"], workspace), "a DVC remote (none is configured)"
    if proc.returncode == 0 and remote:
        return looked
    cache = _out(["dvc", "cache", "dir"], workspace)
    if proc.returncode == 0:
        return f"this workspace's DVC cache {cache}"
    output = proc.stdout + proc.stderr
    missing = missing_targets(output)
    deps = missing_dependencies(output)
    if deps is not None:
        raise Refused(f"run {name!r}: DVC cannot read {looked} without its plugin for that "
                      f"kind of remote (DVC says it misses {deps}). Install it, then run this "
                      'command again:\n    pip install -e ".[s3]"   # or `make setup`')
    if not not_there(output):
        if not remote:
            raise Refused(f"run {name!r}: dvc checkout failed: {_first_error(proc)}")
        # Not "not there" but "could not look" (no keys, wrong endpoint, no connection).
        raise Refused(f"run {name!r}: dvc pull from {looked} failed: {_first_error(proc)}. "
                      "Configure its access, then run this command again:\n    "
                      + "\n    ".join(access_fix(remote, url)))
    source = recorded_cache(workspace, git_remote)
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    if remote:
        local = None if source.startswith("<") else source
        said = "" if missing else f" ({_first_error(proc)})"  # e.g. the bucket does not exist
        raise Refused(
            f"run {name!r}: its outputs ({shown or 'see `dvc status`'}) are in neither this "
            f"workspace's DVC cache ({cache}) nor {looked}{said}. Its params.yaml and dvc.lock "
            "are applied; its data is where the recording workspace pushed it (runs are pushed "
            "only with `dvc config exp.auto_push true`). Point this clone there, then run this "
            "command again:\n    " + "\n    ".join(location_fix(remote, local)))
    raise Refused(
        f"run {name!r}: its outputs ({shown or 'see `dvc status`'}) are in neither "
        f"this workspace's DVC cache ({cache}) nor {looked}. Its params.yaml and dvc.lock are "
        "applied; its data is in the DVC cache of the workspace that recorded it (or the DVC "
        "remote it was pushed to). Point this clone at it, then run this command again:\n"
        f"    dvc remote add --local -d recorded {source}")


def reproduce(workspace: Path, name: str) -> Done:
    """Bring run `name` back into `workspace`: its git ref, params.yaml, dvc.lock and outputs."""
    if not _NAME.fullmatch(name):
        raise Refused(f"{name!r} is not a run name (a DVC experiment name such as amber-hyena)")
    config = dvc_config(workspace)
    git_remote = config.get("exp.git_remote") or "origin"
    fetched = None
    if not has_experiment(workspace, name):
        fetch_experiment(workspace, name, git_remote)
        fetched = git_remote
    proc = _dvc(["dvc", "exp", "apply", name], workspace)
    # `exp apply` writes params.yaml and dvc.lock, then checks the outputs out of the cache; a
    # cache without them fails only that last part, which restore_outputs does again.
    if proc.returncode != 0 and _CHECKOUT_FAILED not in proc.stdout + proc.stderr:
        raise Refused(f"run {name!r}: dvc exp apply failed: {_first_error(proc)}")
    return Done(name, fetched, restore_outputs(workspace, name, git_remote, config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the run's flow-run name = its DVC experiment name")
    parser.add_argument("--workspace", default=".", help="the DVC workspace (default: here)")
    args = parser.parse_args(argv)
    try:
        done = reproduce(Path(args.workspace).resolve(), args.name)
    except Refused as exc:
        print(f"reproduce: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    fetched = f" (git ref from {done.fetched_from!r})" if done.fetched_from else ""
    print(f"run {done.name}{fetched}: params.yaml, dvc.lock and outputs restored, data from "
          f"{done.data_from}. `dvc metrics show` shows its metrics; models/candidate is its "
          "model.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
