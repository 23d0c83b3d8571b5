"""`smallnets report`: the HTML page of a real run and of a real sweep holds their numbers (metrics.jsonl,
the evaluation on the validation split, the cost profile, sweep.json), needs no network, escapes what
it shows, and renders in a real headless Chromium without an error."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import tiny_trained_run
from test_train import CLASSES, make_image_folder

from smallnets.profiler import count_params
from smallnets.report import write_report
from smallnets.rundir import RunDir
from smallnets.sweep import load_sweep, run_sweep
from smallnets.zoo import load_weights

PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallnets", *args], check=False, capture_output=True, text=True, timeout=300)


class Page(HTMLParser):
    """The tables (class attribute and rows of cell text), images and links of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "a":
            self.links.append(a.get("href") or "")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, css: str) -> list[dict[str, str]]:
        """The rows of the table of that class, as dicts by column heading."""
        (rows,) = [rows for c, rows in self.tables if c == css]
        return [dict(zip(rows[0], r)) for r in rows[1:]]


def assert_self_contained(text: str) -> None:
    # no resource or link outside the page: no http(s) or protocol-relative src/href, no script, no stylesheet link
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    page = Page(text)
    assert page.images
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> tuple[Path, Path]:
    run = tiny_trained_run(tmp_path_factory)
    res = run_cli("report", str(run))
    assert res.returncode == 0, res.stderr
    out = run / "report.html"
    assert res.stdout.strip() == str(out)
    return run, out


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("sweep")
    images = make_image_folder(base / "shapes", per_class=8)
    spec = load_sweep({
        "sweep": {"name": "width", "title": "MobileNetV1 width <on> shapes & co"},
        "base": {"model": {"name": "mobilenet_v1", "cifar": True},
                 "data": {"path": str(images), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(base / "cache")},
                 "train": {"epochs": 1, "precision": "fp32", "lr": 0.05, "progress": False}},
        "grid": {"model.width_mult": [0.25, 0.5]},
        "paper": [{"id": "width_mult=0.5", "top1": 63.7, "macs": 149e6}, {"id": "width_mult=1.0", "top1": 70.6, "macs": 569e6}],
    }, out=base / "sweeps")  # fmt: skip
    run_sweep(spec, latency=False, progress=False)
    root = spec.directory
    point = write_report(root / "width_mult=0.25", evaluate=False)  # one point has its own page, the other none
    out = base / "pages" / "sweep.html"  # elsewhere than the sweep: links are relative to the page
    res = run_cli("report", str(root), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    return root, out, point


def test_a_run_report_holds_its_curves_evaluation_costs_and_config(run_report):
    run, out = run_report
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    page = Page(text)
    assert len(page.images) == 2  # learning curves and confusion matrix
    assert "mobilenet_v2 (width_mult=0.35, cifar=True)" in text and "finished" in text

    records = [json.loads(line) for line in RunDir(run).metrics_jsonl.read_text().splitlines() if line.strip()]
    epochs = page.table("epochs")
    assert [r["epoch"] for r in epochs] == [str(r["epoch"]) for r in records]
    for shown, rec in zip(epochs, records):
        assert shown["train loss"] == f"{rec['train_loss']:.4f}" and shown["val loss"] == f"{rec['val_loss']:.4f}"
        assert shown["val top-1 (%)"] == f"{rec['val_top1']:.2f}" and shown["val top-5 (%)"] == f"{rec['val_top5']:.2f}"

    split = RunDir(run).read_split()
    per_class = page.table("per-class")
    assert [r["class"] for r in per_class] == split["classes"] and set(split["classes"]) == set(CLASSES)
    assert [int(r["images"]) for r in per_class] == [split["counts"]["val"][c] for c in split["classes"]]
    correct = sum(int(r["correct"]) for r in per_class)
    top1 = 100 * correct / split["num_val"]
    # the evaluation reproduces the run's own validation number, and says so
    best = json.loads(RunDir(run).run_info.read_text())["best_top1"]
    assert f"{top1:.2f}% (recorded in training: {best:.2f}%)" in text and abs(top1 - best) < 1e-6
    confusion = page.table("confusion")
    assert [r["true \\ predicted"] for r in confusion] == split["classes"]

    params = count_params(load_weights(RunDir(run).weights()))
    assert f"{params:,} ({params / 1e6:.2f} M)" in text
    assert page.table("layers") and "depthwise3x3" in text
    assert "val_fraction" in text and "stratified holdout" in text  # config.json and split.json as tables


def test_no_eval_leaves_the_evaluation_out_and_bad_paths_are_refused(run_report, tmp_path):
    run, _ = run_report
    out = write_report(run, tmp_path / "quick.html", evaluate=False)
    page = Page(out.read_text(encoding="utf-8"))
    assert len(page.images) == 1 and not [c for c, _ in page.tables if c == "per-class"] and page.table("epochs")

    with pytest.raises(ValueError, match=r"path must be a run directory \(holding config.json\) or a sweep directory .* \(holds neither\)"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="out must end in .html, got"):
        write_report(run, tmp_path / "report.txt")
    with pytest.raises(ValueError, match="evaluate must be True or False, got 'no'"):
        write_report(run, evaluate="no")
    res = run_cli("report", str(tmp_path / "missing"))
    assert res.returncode == 2 and "smallnets report: error: path must be a run directory" in res.stderr and "(does not exist)" in res.stderr
    assert not (tmp_path / "missing").exists()


def test_a_sweep_report_holds_its_points_pareto_front_paper_figures_and_links(sweep_report, tmp_path):
    root, out, point = sweep_report
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "MobileNetV1 width &lt;on&gt; shapes &amp; co" in text and "<on>" not in text  # the title is escaped
    data = json.loads((root / "sweep.json").read_text())
    page = Page(text)
    shown = page.table("sweep")
    assert [r["point"] for r in shown] == [r["id"] for r in data["rows"]] == ["width_mult=0.25", "width_mult=0.5"]
    for row, rec in zip(shown, data["rows"]):
        assert row["status"] == rec["status"] == "finished" and row["epochs"] == "1"
        assert row["val top-1 (%)"] == f"{rec['top1']:.2f}" and row["MACs"] == f"{rec['macs'] / 1e6:.1f} M"
        assert row["params"] == f"{rec['params'] / 1e6:.2f} M" and row["input"] == "x".join(map(str, rec["input_size"]))
        assert row["Pareto"].startswith("★") == bool(rec["pareto"])
    assert shown[1]["paper top-1 (%)"] == "63.7" and shown[1]["paper MACs"] == "149 M" and shown[0]["paper top-1 (%)"] == "—"
    assert [r["id"] for r in page.table("paper-only")] == ["width_mult=1.0"]  # the paper's point the sweep has not trained
    links = [h for h in page.links if not h.startswith("#")]
    assert links == ["../sweeps/width/width_mult%3D0.25/report.html"]  # relative, to the one point with a report
    assert (out.parent / links[0].replace("%3D", "=")).resolve() == point.resolve()
    assert len(page.images) == 1 and base64.b64decode(page.images[0].split(",", 1)[1]) == (root / "sweep.png").read_bytes()

    (root / "sweep.png").unlink()  # without it the plot is drawn from sweep.json
    drawn = Page(write_report(root, tmp_path / "drawn.html").read_text(encoding="utf-8"))
    assert len(drawn.images) == 1 and "drawn from sweep.json" in (tmp_path / "drawn.html").read_text()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.parametrize("which", ["run", "sweep"])
def test_the_pages_render_in_a_headless_browser(which, run_report, sweep_report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser check needs playwright (pip install playwright)")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("the browser check needs a Chromium binary (apt-get install chromium)")
    out = run_report[1] if which == "run" else sweep_report[1]
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=browser_path)
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {browser_path} does not start headless: {str(exc).splitlines()[0]}")
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            tab.goto(out.resolve().as_uri(), wait_until="load")
            widths = tab.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
            assert widths and all(w > 0 for w in widths), widths
            assert tab.locator("table").count() >= (6 if which == "run" else 3)
            assert tab.locator("h1").inner_text().strip()
            tab.screenshot(path=str(tmp_path / f"{which}.png"), full_page=True)
            if which == "sweep":  # the point's link opens its own page
                tab.locator("table.sweep a").first.click()
                tab.wait_for_load_state("load")
                assert tab.url.endswith("/report.html") and "mobilenet_v1 (width_mult=0.25, cifar=True)" in tab.title()
                assert all(w > 0 for w in tab.evaluate("[...document.images].map(i => i.naturalWidth)"))
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / f"{which}.png").read_bytes()[:8] == PNG
