"""report.html opened offline by a real headless Chromium: plots and verdicts survive the browser's parser,
and the page paints (screenshot)."""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest
from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(binary, profile, *args, timeout=180):
    # The timeout catches a page that hangs the browser (an alert() would); a loaded 2-core machine needs room.
    r = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"chromium exited {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def report_file(rendered, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    path = d / "report.html"
    path.write_text(rendered[1], encoding="utf-8")
    return path


def test_rendered_dom_has_plots_and_verdicts(chromium, report_file, tmp_path, parse_html):
    dom_text = _chromium(chromium, tmp_path / "profile", "--dump-dom", report_file.as_uri())
    dom = parse_html(dom_text)
    # The browser built SVG elements inside each figure container (not text it failed to parse).
    assert len(dom.by_id("forest-plot").find_all("svg")) == 3
    assert len(dom.by_id("posterior-densities").find_all("svg")) == 1
    assert len(dom.by_id("label-budget-plot").find_all("svg")) == 1
    for fid in ("forest-plot", "posterior-densities"):
        svg = dom.by_id(fid).find_all("svg")[0]
        assert len(svg.find_all("path")) > 20 and svg.find_all("text")
    verdicts = dom.by_id("verdicts").find_all("li", class_="verdict")
    assert [v.attrs["class"].split()[1] for v in verdicts] == [
        "verdict-migrate", "verdict-reject", "verdict-more-labels"]
    assert verdicts[1].attrs["data-candidate"] == "<script>alert(1)</script>"  # text, not markup
    assert not dom.find_all("script")
    assert "cand-a: MIGRATE" in verdicts[0].all_text()


def test_screenshot_is_a_painted_png(chromium, report_file, tmp_path):
    png = tmp_path / "report.png"
    _chromium(chromium, tmp_path / "profile", f"--screenshot={png}", "--window-size=1280,4000",
              report_file.as_uri())
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert struct.unpack(">II", data[16:24]) == (1280, 4000)
    px = np.asarray(Image.open(png).convert("RGB")).astype(int)
    non_white = (px.sum(axis=2) < 720).mean()
    assert non_white > 0.03, f"page looks blank ({non_white:.3%} non-white pixels)"
    # The migrate verdict's green (#1a7f37) and the margin line's red (#c62828) were painted.
    for rgb in ((0x1A, 0x7F, 0x37), (0xC6, 0x28, 0x28)):
        close = (np.abs(px - np.array(rgb)).sum(axis=2) < 30).sum()
        assert close > 200, f"colour {rgb} barely present ({close} px)"
