"""The HTML reports drawn by a real browser: headless Chromium runs the inlined plotly.js."""

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from thrifty.benchmark.html_report import write_html

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fast"))
from test_html_report import CHARTS, plots, realistic_bench  # noqa: E402  (the fast tier's fixture)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: install it with "
    "scripts/ensure_chromium.sh (apt-get install chromium) to draw the reports")


@pytest.fixture(autouse=True)
def prepared():
    """Replaces the tier's check for engines, model and corpus: a browser is all this needs."""


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path)}  # Chromium writes a profile under HOME
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def drawn_charts(dom: str) -> dict[str, int]:
    """Chart div id -> the data marks (markers, bars) plotly drew in it."""
    parts = re.split(r'<div id="(plot-\d+)" class="plotly-graph-div[^"]*"', dom)
    return {div_id: len(re.findall(r'class="point"', body))
            for div_id, body in zip(parts[1::2], parts[2::2], strict=True)
            if 'class="main-svg"' in body}


def png_pixel_bytes(path) -> tuple[int, int, bytes]:
    """(width, height, filtered scanlines) of an 8-bit RGB(A) PNG, decoded with zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed, width, height, channels = 8, b"", 0, 0, 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        position += 12 + length  # length, type, body, CRC
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            compressed += body
    pixels = zlib.decompress(compressed)
    assert len(pixels) == height * (1 + width * channels)  # one filter byte per row
    return width, height, pixels


def test_html_report_renders_in_chromium(tmp_path):
    report = tmp_path / "bench.html"
    write_html(realistic_bench(), report)

    dom = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = drawn_charts(dom.stdout)
    assert sorted(drawn) == sorted(f"plot-{n}" for n in range(1, CHARTS + 1)), drawn
    assert all(marks > 0 for marks in drawn.values()), drawn
    assert "SLO best: 2" in dom.stdout  # the marker's label, drawn as SVG text

    screenshot = tmp_path / "bench.png"
    shot = run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,3000",
                        report.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    width, height, pixels = png_pixel_bytes(screenshot)
    assert (width, height) == (1200, 3000)
    # A blank page decodes to a handful of distinct bytes; text and coloured charts to hundreds.
    assert len(set(pixels)) > 64


def test_cost_chart_renders_in_chromium(isolated_home, run_cli, tmp_path):
    page = tmp_path / "cost.html"
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "100000", "--html", page)
    assert result.exit_code == 0, result.output
    dom = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    [(_, points)] = drawn_charts(dom.stdout).items()
    [(_, traces, _)] = plots(page.read_text())
    assert points == sum(len(t["x"]) for t in traces) > 10  # every option drawn
    # one legend entry per ranked variant (the default bf16, w8a8, w4a16), not one per point
    ranked = {t["name"] for t in traces}
    assert len(ranked) == 3 and dom.stdout.count('class="legendtext"') == len(ranked)
