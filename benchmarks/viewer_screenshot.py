"""Write a real case's viewer page, report its size, and screenshot it in headless Chromium.

    python benchmarks/viewer_screenshot.py ../shared/data/brats2018/Brats18_CBICA_ABM_1 --out /tmp/viewer

writes ``page.html`` (the case's reference and, as a second label map, a copy of it) and
``4views.png``, ``axial.png``, ``coronal.png``, ``sagittal.png``, ``3D.png``, ``no_et.png``
(ET toggled off) into ``--out``; ``--readme docs/viewer.png`` also writes the README's picture
(the four views, scaled down). Uses the DevTools-pipe client of the viewer's test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reporting"))
from test_viewer import Chromium, chromium_executable

from glioseg.data.discovery import discover
from glioseg.reporting.viewer import case_viewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--readme", type=Path, help="also write the README's picture here")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 900), metavar=("W", "H"))
    args = parser.parse_args()
    case = discover(args.case).cases[0]
    args.out.mkdir(parents=True, exist_ok=True)
    page = case_viewer(case, args.out / "page.html", predictions=[("copy", case.label)] if case.label else [])
    print(f"{page.path}: {page.size / 1e6:.2f} MB ({page.size} bytes)")
    executable = chromium_executable()
    if executable is None:
        raise SystemExit("chromium not found")
    browser = Chromium(executable, *args.size)
    try:
        started = time.monotonic()
        browser.call("Page.navigate", page=True, url=page.path.resolve().as_uri())
        while not browser.evaluate(
            "!!(window.gliosegViewer && (window.gliosegViewer.ready || window.gliosegViewer.error))"
        ):
            time.sleep(0.2)
        print(f"ready after {time.monotonic() - started:.1f} s: {browser.evaluate('window.gliosegViewer.timings')}")
        while not browser.evaluate("!!window.gliosegViewer.allDecoded"):
            time.sleep(0.2)
        shots = {
            "4views": "layout-4views",
            "axial": "layout-axial",
            "coronal": "layout-coronal",
            "sagittal": "layout-sagittal",
            "3D": "layout-3D",
        }
        for name, button in shots.items():
            browser.evaluate(f"document.getElementById('{button}').click()")
            Image.fromarray(browser.screenshot()).save(args.out / f"{name}.png")
        browser.evaluate(
            "document.getElementById('layout-4views').click(); document.getElementById('region-et').click()"
        )
        Image.fromarray(browser.screenshot()).save(args.out / "no_et.png")
        print(f"done after {time.monotonic() - started:.1f} s -> {args.out}")
    finally:
        browser.close()
    if args.readme is not None:
        picture = Image.open(args.out / "4views.png")
        picture = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4), Image.LANCZOS)
        picture.convert("RGB").save(args.readme, optimize=True)  # a palette bands the greys and tints them
        print(f"README picture: {args.readme} ({args.readme.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
