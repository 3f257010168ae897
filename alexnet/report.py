"""One self-contained HTML report of a run, and a short markdown summary of it.

    alexnet report --metrics reports/metrics.json --promotion reports/promotion.json \
        --model-dir models/candidate --figures reports/figures \
        --validation reports/validation.json --ingest reports/ingest.json \
        --out reports/report.html --summary reports/summary.md

The HTML page embeds its figures as base64 data: URIs and links no scripts, fonts or styles from
elsewhere: it can be mailed, archived as a CI artifact or opened offline years later. Everything
that comes from data (class names, paths, reasons, params) is HTML-escaped. The markdown summary
is what the Prefect flow publishes as a markdown artifact; there the same values are
markdown-escaped (backslashes, not HTML entities, which markdown would show as text).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from alexnet.io import atomic_open

_logger = logging.getLogger(__name__)

# Headline metrics compared with the champion: (label, key, higher is better).
HEADLINE = (("accuracy", "accuracy", True), ("log loss", "log_loss", False),
            ("ROC AUC", "roc_auc", True), ("n_test", "n_test", True))
MAX_LIST_ITEMS = 20

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.promoted { color: #176917; } .refused { color: #a11; }
figure { display: inline-block; margin: 0 1em 1em 0; } img { max-width: 100%; }
code { font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_e(_fmt(c))}</td>' if isinstance(c, (int, float))
                         and not isinstance(c, bool) else f"<td>{_e(_fmt(c))}</td>" for c in row)
        + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """{"train": {"epochs": 3}} -> [("train.epochs", 3)]; lists are shown shortened."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(str(v) for v in value[:MAX_LIST_ITEMS])
            more = f" ... ({len(value)} items)" if len(value) > MAX_LIST_ITEMS else ""
            rows.append((name, f"[{shown}{more}]"))
        else:
            rows.append((name, value))
    return rows


def _delta(candidate: Any, champion: Any) -> Any:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (candidate, champion))
    return candidate - champion if numeric else None


def _comparison_rows(metrics: Mapping, champion: Mapping | None) -> list[tuple]:
    return [(label, metrics.get(key), (champion or {}).get(key),
             _delta(metrics.get(key), (champion or {}).get(key)))
            for label, key, _ in HEADLINE if key in metrics or key in (champion or {})]


def _figure(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = name.replace("_", " ").capitalize()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _section_metrics(metrics: Mapping) -> str:
    classes = metrics.get("classes", [])
    rows = [(label, metrics.get(key)) for label, key, _ in HEADLINE if key in metrics]
    for avg in ("macro_avg", "weighted_avg"):
        if avg in metrics:
            rows.append((f"{avg.replace('_', ' ')} F1", metrics[avg].get("f1")))
    per_class = [(name, s.get("precision"), s.get("recall"), s.get("f1"), s.get("support"))
                 for name, s in metrics.get("per_class", {}).items()]
    out = ["<h2>Test metrics</h2>", _table(["metric", "value"], rows)]
    if per_class:
        out += ["<h3>Per class</h3>",
                _table(["class", "precision", "recall", "F1", "support"], per_class)]
    matrix = metrics.get("confusion_matrix")
    if matrix and len(classes) == len(matrix):
        out += ["<h3>Confusion matrix</h3><p>rows: true class, columns: predicted class</p>",
                _table(["true \\ predicted", *classes],
                       [(name, *row) for name, row in zip(classes, matrix)])]
    return "\n".join(out)


def _section_promotion(metrics: Mapping, promotion: Mapping | None,
                       champion: Mapping | None) -> str:
    out = ["<h2>Promotion</h2>"]
    if promotion is not None:
        ok = bool(promotion.get("promoted"))
        out.append(f'<p class="{"promoted" if ok else "refused"}"><strong>'
                   f'{"Promoted to champion" if ok else "Not promoted"}</strong></p>')
        reasons = "".join(f"<li>{_e(r)}</li>" for r in promotion.get("reasons", []))
        out.append(f"<ul>{reasons}</ul>")
    if champion is None:
        out.append("<p>No previous champion to compare with.</p>")
    else:
        out.append(_table(["metric", "candidate", "champion", "difference"],
                          _comparison_rows(metrics, champion)))
    gate = _gate_rows(promotion or {})
    if gate:
        out.append(_table(["item", "value"], gate))
    return "\n".join(out)


def _gate_rows(promotion: Mapping) -> list[tuple[str, Any]]:
    """What the gate compared: the class set's line and the one test split both were scored on."""
    class_set = promotion.get("class_set") or {}
    rows: list[tuple[str, Any]] = []
    if class_set:
        first = " (first model of this class set: no champion to beat)" \
            if promotion.get("first_of_class_set") else ""
        rows.append(("class set", f"{', '.join(map(str, class_set.get('classes', [])))} "
                                  f"(id {class_set.get('id')}){first}"))
    aside = promotion.get("set_aside")
    if aside:
        rows.append(("champion set aside", f"classes {', '.join(map(str, aside['classes']))} "
                                           f"-> {aside['path']}"))
    if promotion.get("restored_from"):
        rows.append(("champion brought back from", promotion["restored_from"]))
    for label, key in (("test set sha256 (both scored on it)", "test_data_sha256"),
                       ("test images", "n_test"), ("candidate accuracy", "candidate_accuracy"),
                       ("champion accuracy on this test set", "champion_accuracy"),
                       ("champion accuracy when it was promoted (its own test set)",
                        "champion_recorded_accuracy")):
        if key in promotion:
            rows.append((label, promotion[key]))
    return rows


def _section_ingest(summary: Mapping | None) -> str:
    """What ingest found, and what it left out: empty class folders are not classes."""
    if not summary:
        return ""
    rows = [(k, summary[k]) for k in ("layout", "classes", "files_seen", "ingested")
            if k in summary]
    out = ["<h2>Data ingest</h2>", _table(["item", "value"], _flatten(dict(rows)))]
    empty = summary.get("empty_class_folders") or []
    if empty:
        out.append(f'<p class="refused"><strong>{len(empty)} empty class folder(s) dropped'
                   "</strong> (no image in them, so not classes): "
                   f"{_e(', '.join(map(str, empty)))}</p>")
    if summary.get("ignored"):
        out += ["<h3>Ignored files</h3>", _table(["reason", "count"], _flatten(summary["ignored"]))]
    return "\n".join(out)


def _section_validation(summary: Mapping | None) -> str:
    if not summary:
        return "<h2>Data validation</h2><p>No validation summary.</p>"
    scalars = [(k, v) for k, v in summary.items() if not isinstance(v, Mapping)]
    out = ["<h2>Data validation</h2>"]
    if scalars:
        out.append(_table(["item", "value"], _flatten(dict(scalars))))
    for key, value in summary.items():
        if isinstance(value, Mapping):
            out += [f"<h3>{_e(key.replace('_', ' '))}</h3>",
                    _table(["", "count"], _flatten(value))]
    return "\n".join(out)


def _section_provenance(meta: Mapping) -> str:
    basics = [(k, meta[k]) for k in ("classes", "image_size", "resize", "world_size")
              if k in meta]
    out = ["<h2>Model</h2>", _table(["item", "value"], _flatten(dict(basics)))]
    for key, title in (("params", "Parameters"), ("versions", "Library versions"),
                       ("data", "Data hashes")):
        if isinstance(meta.get(key), Mapping):
            out += [f"<h3>{title}</h3>", _table(["key", "value"], _flatten(meta[key]))]
    return "\n".join(out)


def render_report(metrics: Mapping, validation_summary: Mapping | None,
                  promotion: Mapping | None, model_metadata: Mapping,
                  figures: Mapping[str, Path], champion_metrics: Mapping | None,
                  ingest_summary: Mapping | None = None) -> str:
    """The whole report as one self-contained HTML page.

    Args:
        metrics: reports/metrics.json of the candidate.
        validation_summary: what the validate stage reported; scalars become a table, each
            mapping (e.g. counts by reason) a table of its own.
        promotion: reports/promotion.json (decision and reasons), or None.
        model_metadata: the candidate's model.json (classes, params, versions, data hashes).
        figures: {name: path to a PNG}, embedded as data: URIs in this order.
        champion_metrics: the headline metrics of the champion the candidate was compared with.
        ingest_summary: reports/ingest.json (layout, classes, empty class folders), or None.
    """
    title = f"AlexNet evaluation: {metrics.get('accuracy', float('nan')):.2%} test accuracy"
    figs = "".join(_figure(name, path) for name, path in figures.items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _section_metrics(metrics),
        _section_promotion(metrics, promotion, champion_metrics),
        f"<h2>Figures</h2>{figs or '<p>No figures.</p>'}",
        _section_ingest(ingest_summary),
        _section_validation(validation_summary),
        _section_provenance(model_metadata),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# Every ASCII punctuation character: CommonMark renders a backslash-escaped one as itself.
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _md(value: Any) -> str:
    """A data value as literal markdown text (table cell or list item): every ASCII punctuation
    character backslash-escaped, so no link, image, emphasis, HTML tag, entity or cell break can
    come from a class name or a reason; whitespace runs and line breaks become one space. Numbers
    are ours and stay as they are."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value)
    return _MD_PUNCTUATION.sub(r"\\\1", " ".join(_fmt(value).split()))


def render_markdown_summary(metrics: Mapping, promotion: Mapping | None,
                            champion_metrics: Mapping | None = None,
                            ingest_summary: Mapping | None = None) -> str:
    """A short markdown summary: headline metrics vs the champion, and the promotion decision."""
    lines = ["# AlexNet evaluation", "",
             f"Classes: {', '.join(_md(c) for c in metrics.get('classes', []))}", ""]
    lines += ["| metric | candidate | champion | difference |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {label} | {_md(c)} | {_md(a)} | {_md(d)} |"
              for label, c, a, d in _comparison_rows(metrics, champion_metrics)]
    if promotion is not None:
        verdict = "**Promoted** to champion" if promotion.get("promoted") else "**Not promoted**"
        lines += ["", verdict, ""] + [f"- {_md(r)}" for r in promotion.get("reasons", [])]
        if promotion.get("test_data_sha256"):
            lines += ["", f"Both scored on the same test set: {_md(promotion.get('n_test'))} "
                          f"images, sha256 {_md(promotion['test_data_sha256'])}"]
    empty = (ingest_summary or {}).get("empty_class_folders") or []
    if empty:
        lines += ["", f"Empty class folders dropped (not classes): "
                      f"{', '.join(_md(f) for f in empty)}"]
    return "\n".join(lines) + "\n"


def _read_json(path: str | Path | None) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def write_report(report_path: str | Path, metrics_path: str | Path,
                 promotion_path: str | Path | None, model_dir: str | Path,
                 figures_dir: str | Path, validation_path: str | Path | None = None,
                 summary_path: str | Path | None = None,
                 ingest_path: str | Path | None = None) -> str:
    """Read the run's outputs, write the HTML report (and the markdown summary); return the summary.

    The champion compared with is the one recorded in promotion.json ("champion": the champion
    before this run's decision), so the report does not depend on models/champion's current state.
    """
    metrics = _read_json(metrics_path)
    if metrics is None:
        raise FileNotFoundError(f"{metrics_path}: no metrics; run `alexnet evaluate` first")
    promotion = _read_json(promotion_path)
    champion = (promotion or {}).get("champion")
    metadata = _read_json(Path(model_dir) / "model.json") or {}
    figures = {p.stem: p for p in sorted(Path(figures_dir).glob("*.png"))}
    ingest = _read_json(ingest_path)
    page = render_report(metrics, _read_json(validation_path), promotion, metadata, figures,
                         champion, ingest)
    with atomic_open(report_path, encoding="utf-8") as fh:
        fh.write(page)
    summary = render_markdown_summary(metrics, promotion, champion, ingest)
    if summary_path is not None:
        with atomic_open(summary_path, encoding="utf-8") as fh:
            fh.write(summary)
    _logger.info("report written to %s (%d figures)", report_path, len(figures))
    return summary
