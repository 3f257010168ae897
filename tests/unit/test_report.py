"""Tests for alexnet.report: a real evaluate + promote run rendered into one offline HTML page."""

from __future__ import annotations

import base64
import re
import json
from collections import Counter

import numpy as np
import pytest

from alexnet.evaluate import evaluate
from alexnet.io import write_json
from alexnet.params import EvaluateParams
from alexnet.params import PromoteParams
from alexnet.promote import promote
from alexnet.report import render_markdown_summary, render_report, write_report
from alexnet.validate import summarise
from tests.unit.test_evaluate import (BLUE, PNG_MAGIC, RED, colour_image, make_cache,
                                      make_dvclive, make_model_dir)

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def run(tmp_path):
    """A real run: evaluate a tiny model, promote it, a validation summary beside it."""
    classes = ["cat", EVIL]
    images = np.stack([colour_image(c) for c in [RED, RED, RED, BLUE, BLUE, BLUE]])
    model_dir = make_model_dir(tmp_path, classes=classes,
                               params={"train": {"epochs": 3, "batch_size": 8}},
                               versions={"tensorflow": "2.15.1", "python": "3.11"},
                               data={"cache": "abc123"}, world_size=2)
    cache = make_cache(tmp_path, images, [0, 0, 1, 1, 1, 1], classes=classes)
    r = tmp_path / "reports"
    evaluate(model_dir, cache, EvaluateParams(batch_size=4), r / "metrics.json",
             r / "predictions.csv", r / "figures", r / "roc.csv", make_dvclive(tmp_path))
    promote(model_dir, r / "metrics.json", tmp_path / "champion", r / "promotion.json",
            PromoteParams(min_accuracy=0.5), cache_dir=cache)
    (r / "ingest.json").write_text(json.dumps({
        "layout": "class_folders", "classes": classes, "files_seen": 13, "ingested": 12,
        "ignored": {"system file": 1}, "empty_class_folders": ["birds", "<fish>"]}))
    # validation.json as the validate stage writes it (its own summarise), not a hand-made dict.
    write_json(r / "validation.json", summarise(
        12, Counter({"truncated file": 1, "<too small>": 1}), Counter(),
        Counter({"cat": 6, EVIL: 4})))
    return model_dir, r


def test_write_report_is_one_self_contained_page(run):
    model_dir, r = run
    summary = write_report(r / "report.html", r / "metrics.json", r / "promotion.json", model_dir,
                           r / "figures", validation_path=r / "validation.json",
                           summary_path=r / "summary.md", ingest_path=r / "ingest.json")
    page = (r / "report.html").read_text(encoding="utf-8")

    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing fetched from elsewhere
    assert "<script" not in page and "http" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # class name escaped

    assert "83.33% test accuracy" in page  # 5 of 6: the red image labelled EVIL is wrong
    assert "<td>accuracy</td><td class=\"num\">0.8333</td>" in page
    assert "Promoted to champion" in page and "first model becomes champion" in page
    assert "&lt;too small&gt;" in page and "truncated file" in page
    assert '<td>accepted</td><td class="num">10</td>' in page  # validate's own counts
    assert '<td>quarantined</td><td class="num">2</td>' in page
    assert "train.epochs" in page and "2.15.1" in page and "abc123" in page
    assert "No previous champion" in page
    promotion = json.loads((r / "promotion.json").read_text())
    assert f"<td>test set sha256 (both scored on it)</td><td>{promotion['test_data_sha256']}" \
        in page
    assert "first model of this class set" in page
    assert "2 empty class folder(s) dropped" in page and "birds, &lt;fish&gt;" in page

    assert (r / "summary.md").read_text() == summary
    assert "| accuracy | 0.8333 |" in summary and "**Promoted**" in summary
    assert "<script>" not in summary
    assert f"sha256 {promotion['test_data_sha256']}" in summary
    assert "Empty class folders dropped (not classes): birds, " in summary
    assert not list(r.glob(".*"))  # atomic writes left no temp files


def test_champion_comparison_in_html_and_markdown():
    metrics = {"accuracy": 0.9, "log_loss": 0.3, "n_test": 10, "classes": ["a|b", "c"]}
    champion = {"accuracy": 0.85, "log_loss": 0.35, "n_test": 10}
    promotion = {"promoted": True, "reasons": ["improvement +0.0500"]}
    page = render_report(metrics, None, promotion, {"classes": ["a|b", "c"]}, {}, champion)
    assert "<td>accuracy</td><td class=\"num\">0.9000</td><td class=\"num\">0.8500</td>" \
           "<td class=\"num\">0.0500</td>" in page
    assert "No figures." in page and "No validation summary." in page
    md = render_markdown_summary(metrics, promotion, champion)
    assert "| log loss | 0.3000 | 0.3500 | -0.0500 |" in md
    assert "a\\|b" in md  # a class name cannot break the table


def test_write_report_needs_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet evaluate"):
        write_report(tmp_path / "r.html", tmp_path / "none.json", None, tmp_path, tmp_path)
