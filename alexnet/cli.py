"""`alexnet`: one subcommand per pipeline stage; each is one stage of dvc.yaml.

    alexnet sample-data data/sample
    alexnet ingest --source data/sample --raw data/raw --manifest data/manifest.csv
    alexnet validate ... ; alexnet split ... ; alexnet preprocess ... ; alexnet train ...
    alexnet evaluate ... ; alexnet promote ... ; alexnet predict image.jpg folder/

Every path is an argument (with the default dvc.yaml uses), and each stage reads only its own
block of params.yaml. Errors are one line naming the file and the reason, and the exit code tells
an orchestrator whether a retry can help (alexnet/errors.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from alexnet.errors import EXIT_CONFIG, EXIT_DATA, PipelineError
from alexnet.params import ParamsError, load_params

_logger = logging.getLogger("alexnet")
CHAMPION = Path("models/champion")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_sample_data(a: argparse.Namespace) -> None:
    from alexnet.sample_data import generate_sample_data

    counts = generate_sample_data(a.out, per_class=a.per_class, seed=a.seed,
                                  classes=tuple(a.classes.split(",")), overwrite=a.overwrite)
    _logger.info("wrote synthetic sample data to %s: %s", a.out, counts)


def cmd_ingest(a: argparse.Namespace) -> None:
    from alexnet.ingest import ingest

    p = load_params(a.params).ingest
    ingest(a.source or Path(p.source), a.raw, a.manifest, a.summary, p)


def cmd_validate(a: argparse.Namespace) -> None:
    from alexnet.validate import validate

    validate(a.raw, a.manifest, a.validated, a.quarantine, a.summary,
             load_params(a.params).validate, workers=a.workers, memo_path=a.verdicts)


def cmd_split(a: argparse.Namespace) -> None:
    from alexnet.split import split

    split(a.validated, a.splits, a.summary, load_params(a.params).split)


def cmd_preprocess(a: argparse.Namespace) -> None:
    from alexnet.preprocess import preprocess

    preprocess(a.raw, a.splits, a.out, load_params(a.params).preprocess, workers=a.workers,
               summary_path=a.summary)


def cmd_train(a: argparse.Namespace) -> None:
    from alexnet.io import claim_output_dir
    from alexnet.train import launch

    # Kept and updated across runs, so checked here, before any worker starts: a directory that
    # the pipeline did not write is refused (exit 78), never cleaned.
    params = load_params(a.params).train  # a params mistake creates nothing
    claim_output_dir(a.checkpoint_dir)
    claim_output_dir(a.live_dir)
    launch(params, a.params, a.cache, a.model_dir, a.checkpoint_dir, a.live_dir)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from alexnet.evaluate import evaluate

    evaluate(a.model_dir, a.cache, load_params(a.params).evaluate, a.metrics, a.predictions,
             a.figures, live_dir=a.live_dir, roc_path=a.roc)


def cmd_promote(a: argparse.Namespace) -> None:
    from alexnet.promote import promote

    promote(a.model_dir, a.metrics, a.champion, a.promotion, load_params(a.params).promote,
            cache_dir=a.cache, champions_dir=a.champions)


def cmd_report(a: argparse.Namespace) -> None:
    from alexnet.report import write_report

    write_report(a.out, a.metrics, a.promotion, a.model_dir, a.figures,
                 validation_path=a.validation, summary_path=a.summary, ingest_path=a.ingest)
    _logger.info("report written to %s", a.out)


def cmd_predict(a: argparse.Namespace) -> int:
    from alexnet.predict import configured_classes, format_results, predict

    # The champion must fit the configured data; a model named with --model is used as given.
    configured = configured_classes(a.params, a.cache) if a.model is None else None
    try:
        results, errors = predict(a.paths, a.model or CHAMPION, batch_size=a.batch_size,
                                  top_k=a.top_k, configured=configured)
    except (FileNotFoundError, ValueError) as exc:  # missing or unsafe model/metadata
        _logger.error("%s", exc)
        return EXIT_CONFIG
    print(format_results(results, errors, a.format))
    return EXIT_DATA if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name: str, func: Callable[[argparse.Namespace], int | None], help: str,
              inputs: dict[str, str], outputs: dict[str, str],
              state: dict[str, str] | None = None,
              listed: dict[str, str] | None = None) -> argparse.ArgumentParser:
        """A stage command; its path arguments are declared as inputs or outputs, so
        tests/unit/test_dvc_contract.py can check them against dvc.yaml's deps and outs. `state`
        is a stage's own resume state, outside DVC (reused only when its fingerprint fits).
        `listed` maps an input folder to the input listing (path, sha256) that names the files
        the stage reads from it: dvc.yaml's dep is the listing, not the folder."""
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--params", type=Path, default=Path("params.yaml"))
        state = state or {}
        for flag, default in {**inputs, **outputs, **state}.items():
            kind = "output" if flag in outputs else "state" if flag in state else "input"
            p.add_argument(f"--{flag}", type=Path, default=Path(default),
                           help=f"{kind} (default: {default})")
        p.set_defaults(func=func, inputs=[f.replace("-", "_") for f in inputs],
                       outputs=[f.replace("-", "_") for f in outputs],
                       state=[f.replace("-", "_") for f in state],
                       listed={f.replace("-", "_"): v.replace("-", "_")
                               for f, v in (listed or {}).items()})
        return p

    p = sub.add_parser("sample-data", help="write the built-in synthetic image set")
    p.add_argument("out", type=Path)
    p.add_argument("--per-class", type=int, default=80)
    p.add_argument("--classes", default="disks,stripes", help="comma-separated class names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_sample_data)

    p = stage("ingest", cmd_ingest, "copy the source images into data/raw and list them",
              inputs={}, outputs={"raw": "data/raw", "manifest": "data/manifest.csv",
                                  "summary": "reports/ingest.json"})
    p.add_argument("--source", type=Path, default=None, help="input (default: ingest.source)")
    p.set_defaults(inputs=["source"])

    p = stage("validate", cmd_validate, "decode every image; quarantine unusable ones",
              inputs={"raw": "data/raw", "manifest": "data/manifest.csv"},
              outputs={"validated": "data/validated.csv", "quarantine": "reports/quarantine.csv",
                       "summary": "reports/validation.json", "verdicts": "data/verdicts.csv"},
              listed={"raw": "manifest"})
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    stage("split", cmd_split, "assign train/val/test by content hash",
          inputs={"validated": "data/validated.csv"},
          outputs={"splits": "data/splits.csv", "summary": "reports/split.json"})

    p = stage("preprocess", cmd_preprocess, "resize once into the uint8 memmap cache",
              inputs={"raw": "data/raw", "splits": "data/splits.csv"},
              outputs={"out": "data/cache", "summary": "reports/preprocess.json"},
              listed={"raw": "splits"})
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    stage("train", cmd_train, "train AlexNet with horovodrun (train.workers processes)",
          inputs={"cache": "data/cache"},
          outputs={"model-dir": "models/candidate", "live-dir": "dvclive"},
          state={"checkpoint-dir": "models/checkpoints"})

    stage("evaluate", cmd_evaluate, "batched prediction and metrics on the test split",
          inputs={"model-dir": "models/candidate", "cache": "data/cache", "live-dir": "dvclive"},
          outputs={"metrics": "reports/metrics.json", "predictions": "reports/predictions.csv",
                   "roc": "reports/roc.csv", "figures": "reports/figures"})

    stage("promote", cmd_promote, "make the candidate the champion of its class set if it "
          "beats the champion on the current test split",
          inputs={"model-dir": "models/candidate", "metrics": "reports/metrics.json",
                  "cache": "data/cache"},
          outputs={"champion": "models/champion", "champions": "models/champions",
                   "promotion": "reports/promotion.json"})

    stage("report", cmd_report, "write the self-contained HTML report and a summary",
          inputs={"metrics": "reports/metrics.json", "promotion": "reports/promotion.json",
                  "model-dir": "models/candidate", "figures": "reports/figures",
                  "validation": "reports/validation.json", "ingest": "reports/ingest.json"},
          outputs={"out": "reports/report.html", "summary": "reports/summary.md"})

    p = sub.add_parser("predict", help="classify images or folders with a trained model")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    p.add_argument("--model", type=Path, default=None,
                   help=f"model directory (default: the champion, {CHAMPION}, checked against "
                        "the classes of the configured data)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="where the configured data is named (ingest.source)")
    p.add_argument("--cache", type=Path, default=Path("data/cache"),
                   help="its classes are checked when ingest.source is not there")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        code = args.func(args)
    except ParamsError as exc:
        _logger.error("%s", exc)
        return EXIT_CONFIG
    except PipelineError as exc:
        _logger.error("%s", exc)
        return exc.exit_code
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
