"""The HTML report: inline figures, escaping, offline-only resources, manifest round trip."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from optiscope.report import (  # noqa: E402
    MANIFEST_NAME,
    ReportFigure,
    RunReport,
    build_report,
    render_html,
    write_report,
)

HOSTILE = "<img src=x onerror=\"alert('pwn')\">&amp;</td>"


class _Collector(HTMLParser):
    """Collects tags with their attributes (script bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    c = _Collector()
    c.feed(page)
    return c.tags


def _png(path: Path, color: str = "C0") -> Path:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0], color=color)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _plotly_json(path: Path) -> Path:
    pio = pytest.importorskip("plotly.io")
    go = pytest.importorskip("plotly.graph_objects")
    fig = go.Figure(go.Surface(z=[[1.0, 2.0], [3.0, 4.0]]))
    path.write_text(pio.to_json(fig), encoding="utf-8")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "figures").mkdir()
    _png(tmp_path / "figures" / "a.png", "C0")
    _png(tmp_path / "figures" / "b.png", "C1")
    return tmp_path


def _report(run_dir: Path, with_plotly: bool = False) -> RunReport:
    r = RunReport(
        name="demo",
        summary={"data": "digits", "epochs": "3", "final val accuracy": "0.97"},
        config_text='[run]\nname = "demo"\n',
        notes=["curvature skipped"],
    )
    r.add_figure("Schedule", "Look for the warmup end.", "figures/a.png")
    r.add_figure("Curves", "Loss should fall.", Path("figures/b.png"))
    if with_plotly:
        _plotly_json(run_dir / "figures" / "s.json")
        r.add_figure("Surface", "Drag to rotate.", "figures/s.json", kind="plotly")
    return r


def test_every_figure_is_inlined_as_the_png_it_was_given(run_dir: Path) -> None:
    page = render_html(_report(run_dir), run_dir)
    imgs = [a for t, a in _tags(page) if t == "img"]
    assert len(imgs) == 2
    for attrs, name in zip(imgs, ["a.png", "b.png"]):
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (run_dir / "figures" / name).read_bytes()
    assert "Look for the warmup end." in page and "Loss should fall." in page


def test_summary_rows_notes_and_config_appear_in_order(run_dir: Path) -> None:
    page = render_html(_report(run_dir), run_dir)
    rows = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", page)
    assert rows == [("data", "digits"), ("epochs", "3"), ("final val accuracy", "0.97")]
    assert "curvature skipped" in page
    assert "[run]\nname = &quot;demo&quot;" in page
    assert page.index("Schedule") < page.index("Curves")


def test_hostile_text_is_escaped_everywhere(run_dir: Path) -> None:
    r = RunReport(
        name=HOSTILE,
        summary={HOSTILE: HOSTILE},
        config_text=HOSTILE,
        notes=[HOSTILE],
    )
    r.add_figure(HOSTILE, HOSTILE, "figures/a.png")
    page = render_html(r, run_dir)
    assert HOSTILE not in page
    assert "onerror" not in [k for _, a in _tags(page) for k in a]
    # The only img is the figure itself, with an inline source.
    imgs = [a for t, a in _tags(page) if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    assert page.count("&lt;img src=x onerror=") >= 6


def test_nothing_is_loaded_from_the_network(run_dir: Path) -> None:
    page = render_html(_report(run_dir, with_plotly=True), run_dir)
    for tag, attrs in _tags(page):
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not re.match(r"\s*(https?:)?//", value), (tag, key, value)
        if tag == "script":
            assert "src" not in attrs
        if tag == "link":
            assert attrs.get("rel") != "stylesheet"


def test_plotly_figure_carries_plotlyjs_inline_once(run_dir: Path) -> None:
    r = _report(run_dir, with_plotly=True)
    _plotly_json(run_dir / "figures" / "t.json")
    r.add_figure("Second surface", "Again.", "figures/t.json", kind="plotly")
    page = render_html(r, run_dir)
    assert page.count("plotly.js v") == 1  # the library banner, inlined exactly once
    assert page.count('class="plotly-graph-div"') == 2
    assert page.count("Plotly.newPlot") >= 2


def test_missing_figure_is_reported_not_fatal(run_dir: Path) -> None:
    r = RunReport("x")
    r.add_figure("Gone", "Nothing here.", "figures/nope.png")
    with pytest.warns(UserWarning, match="nope.png"):
        page = render_html(r, run_dir)
    assert "Figure file not found: figures/nope.png" in page


def test_write_and_build_round_trip(run_dir: Path) -> None:
    r = _report(run_dir)
    out = write_report(r, run_dir)
    assert out == run_dir / "report.html"
    manifest = json.loads((run_dir / MANIFEST_NAME).read_text())
    assert manifest["summary"][0] == ["data", "digits"]
    assert RunReport.load(run_dir) == r
    first = out.read_text()
    out.unlink()
    rebuilt = build_report(run_dir)
    # Same page apart from the generation time stamp.
    strip = re.compile(r"Generated [0-9: -]+ from")
    assert strip.sub("", rebuilt.read_text()) == strip.sub("", first)
    other = build_report(run_dir, path=run_dir / "elsewhere.html")
    assert other.is_file()


def test_build_report_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        build_report(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no report.json"):
        build_report(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_report(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"name": "x", "figures": [{"bad": 1}]}))
    with pytest.raises(ValueError, match="malformed report manifest"):
        build_report(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="string 'name'"):
        build_report(tmp_path)


def test_figure_entry_validation() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        ReportFigure("t", "c", "f.png", kind="svg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="file must be"):
        ReportFigure("t", "c", "")


def test_add_figure_replaces_same_file(run_dir: Path) -> None:
    r = _report(run_dir)
    r.add_figure("Schedule v2", "New caption.", "figures/a.png")
    assert [f.title for f in r.figures] == ["Curves", "Schedule v2"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_every_image_loads_in_headless_chromium(run_dir: Path) -> None:
    r = _report(run_dir)
    page_path = write_report(r, run_dir)
    # A script appended to the page writes how many images decoded into the DOM title,
    # which --dump-dom prints after load.
    probe = (
        "<script>window.addEventListener('load',()=>{const im=[...document.images];"
        "document.title='LOADED '+im.filter(i=>i.complete&&i.naturalWidth>0).length+"
        "' OF '+im.length;});</script>"
    )
    probe_path = run_dir / "probe.html"
    probe_path.write_text(page_path.read_text().replace("</body>", probe + "</body>"))
    out = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"LOADED (\d+) OF (\d+)", out.stdout)
    assert m, out.stderr[-2000:]
    assert m.group(1) == m.group(2) == str(len(r.figures))
