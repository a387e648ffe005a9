"""Screenshots of a run's report.html in headless Chromium, at desktop and phone widths.

    python scripts/screenshot_report.py RUN_DIR [--out docs/screenshots] [--browser chromium]

Writes report-desktop.png (1366x900) and report-phone.png (390x844, the first screen a
person sees) and prints their paths. Needs a Chromium/Chrome binary (Debian: apt install
chromium); the report itself is self-contained (no network).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {"desktop": (1366, 900), "phone": (390, 844)}


def find_browser(name: str | None = None) -> str | None:
    for candidate in (
        [name] if name else ["chromium", "chromium-browser", "google-chrome", "chrome"]
    ):
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    return None


def screenshot(html: Path, out: Path, width: int, height: int, browser: str) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out}", html.resolve().as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot to {out}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    ap.add_argument("--browser")
    args = ap.parse_args()
    html = args.run_dir / "report.html"
    if not html.is_file():
        print(f"{html}: no report; run `privquant report {args.run_dir}` first", file=sys.stderr)
        return 2
    browser = find_browser(args.browser)
    if browser is None:
        print("no Chromium/Chrome found (Debian: apt install chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in SIZES.items():
        print(screenshot(html, args.out / f"report-{name}.png", w, h, browser))
    return 0


if __name__ == "__main__":
    sys.exit(main())
