"""Hostile class names: checked at ingest (before hours of training), drawn literally in the
plots (no TeX), and escaped in the HTML report and in the markdown summary."""

from __future__ import annotations

import os

import numpy as np
import pytest
from markdown_it import MarkdownIt

from alexnet.errors import DataError
from alexnet.evaluate import plot_confident_errors, plot_confusion_matrix
from alexnet.ingest import ingest
from alexnet.params import IngestParams
from alexnet.report import render_markdown_summary, render_report
from tests.unit.corpus import image_bytes, write_tree

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MATH_NAMES = ["$x^$", "$\\foo{$", "a $b$ c", "100$"]


@pytest.mark.parametrize("name", MATH_NAMES)
def test_plots_draw_class_names_literally(tmp_path, name):
    classes = [name, "dogs"]
    plot_confusion_matrix([[3, 1], [0, 4]], classes, tmp_path / "cm.png")
    images = np.zeros((1, 8, 8, 3), np.uint8)
    plot_confident_errors(images, [f"true: {name}\npred: dogs (0.99)"], tmp_path / "err.png")
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "err.png").read_bytes().startswith(PNG_MAGIC)


def _ingest_classes(tmp_path, names, flat=False):
    if flat:
        files = {f"train/{n}.{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=i + 10 * k)
                 for k, n in enumerate(names) for i in range(2)}
    else:
        files = {f"{n}/{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=i + 10 * k)
                 for k, n in enumerate(names) for i in range(2)}
    source = write_tree(tmp_path / "src", files)
    out = tmp_path / "out"
    return ingest(source, out / "raw", out / "manifest.csv", out / "ingest.json",
                  IngestParams(source=str(source))), out


@pytest.mark.parametrize("bad, why", [
    ("tab\there", "control"), ("bell\x07", "control"), ("x" * 101, "100"),
    ("back\\slash", "separator"), ("new\nline", "control")])
def test_unusable_class_names_are_refused_at_ingest(tmp_path, bad, why):
    with pytest.raises(DataError, match=why) as info:
        _ingest_classes(tmp_path, ["cats", bad])
    assert "src" in str(info.value)  # names the folder
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_unusable_flat_label_is_refused_at_ingest(tmp_path):
    with pytest.raises(DataError, match="control"):
        _ingest_classes(tmp_path, ["cat", "d\x1bog"], flat=True)


def test_non_utf8_class_folder_is_refused_at_ingest(tmp_path):
    source = tmp_path / "src"
    write_tree(source, {"cats/1.jpg": image_bytes("JPEG", size=(40, 40), seed=1)})
    bad = os.fsencode(source) + b"/d\xf6gs"
    os.mkdir(bad)
    with open(bad + b"/1.jpg", "wb") as fh:
        fh.write(image_bytes("JPEG", size=(40, 40), seed=2))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="UTF-8"):
        ingest(source, out / "raw", out / "manifest.csv", out / "ingest.json",
               IngestParams(source=str(source)))


def test_odd_but_printable_class_names_are_accepted(tmp_path):
    names = ["$x^$", "[md](javascript:alert(3))", "<b onclick=x>bold", "caf\u00e9 \u732b",
             "x" * 100]
    summary, _ = _ingest_classes(tmp_path, names)
    assert summary["classes"] == sorted(names)


HOSTILE = ["[md](javascript:alert(3))", "<script>alert('x')</script>", "a|b", "*bold* _it_",
           "`code`", "![img](http://example.com/x.png)", "# heading", "&lt;", "back\\slash"]


def _rendered(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_markdown_summary_shows_names_literally_and_links_nothing():
    metrics = {"accuracy": 0.9, "log_loss": 0.3, "n_test": 10, "classes": HOSTILE}
    promotion = {"promoted": False, "reasons": [f"candidate classes {HOSTILE} differ"]}
    md = render_markdown_summary(metrics, promotion, {"accuracy": 0.8})
    html = _rendered(md)
    assert "<a " not in html and "<img" not in html and "<script" not in html
    assert "<em>" not in html and "<code>" not in html and "<h1>AlexNet" in html
    assert html.count("<h1>") == 1
    # Each name reads as itself: no HTML entities shown as text (issue 18), nothing dropped.
    text = html.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"') \
        .replace("&amp;", "&")
    for name in HOSTILE:
        assert name in text, name
    assert "&#x27;" not in md and "&lt;script" not in md
    assert "| accuracy | 0.9000 | 0.8000 | 0.1000 |" in md


def test_html_report_escapes_class_names_and_reasons():
    evil = "<script>alert(1)</script>"
    metrics = {"accuracy": 0.5, "classes": [evil, "<img src=x onerror=alert(2)>"],
               "per_class": {evil: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
               "confusion_matrix": [[1, 0], [0, 1]]}
    promotion = {"promoted": False, "reasons": ["<iframe src=javascript:alert(3)>"]}
    page = render_report(metrics, {"by_reason": {"<b onmouseover=x>": 1}}, promotion,
                         {"classes": [evil]}, {}, None)
    for tag in ("<script", "<img src=x", "<iframe", "<b onmouseover"):
        assert tag not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;iframe src=javascript:alert(3)&gt;" in page
