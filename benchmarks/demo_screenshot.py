"""Screenshot of the demo app in headless Chromium (Debian's `chromium` package).

    python -m benchmarks.demo_screenshot [--workdir W] [--out benchmarks/results/demo.png]

Starts `jaxformer demo` for the run in W (without one, first trains a tiny reverse-digits
model from experiments/tiny_reverse.py into a temporary directory, about a minute on a 2-core CPU),
opens it with `chromium --headless --screenshot`, and checks that the picture is not blank.
The page opens with a held-out input already decoded, so the picture shows a model answer.
Install the browser with `apt-get install -y chromium` when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "demo.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
TINY_OVERRIDES = (
    "--config.train.eval_every=0",
    "--config.train.num_samples=0",
    "--config.train.progress=False",
)


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def train_tiny_default(workdir: Path) -> Path:
    from jaxformer import cli

    config = REPO_ROOT / "experiments" / "tiny_reverse.py"
    code = cli.main(["train", "--config", str(config), "--workdir", str(workdir), *TINY_OVERRIDES])
    if code != 0:
        raise SystemExit(f"training the tiny default run failed (exit {code})")
    return workdir


def screenshot(url: str, out: Path, chromium: str, size: tuple[int, int] = (1280, 900), budget_ms: int = 8000) -> Path:
    """Render `url` headless into the PNG `out` (the page's scripts get `budget_ms` of virtual time)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="jaxformer-chromium-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out.resolve()}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return out


def blank_fraction(path: Path) -> float:
    """Share of pixels equal to the most common colour (1.0: a blank page)."""
    from PIL import Image

    with Image.open(path) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
        total = image.size[0] * image.size[1]
    return max(count for count, _ in colors) / total


def capture(workdir: Path, out: Path, chromium: str) -> tuple[Path, str, float]:
    """Serve the demo for `workdir` with a held-out input decoded, screenshot it; (png, url, blank share)."""
    from jaxformer import demo, inference

    run = inference.load_run(workdir)
    examples = demo.held_out_inputs(run)
    initial = max(examples, key=len) if examples else None
    if initial:
        demo.answer(run, initial)  # compile the decoding program now, so the page's first request answers at once
    app, url = demo.launch(run, initial=initial)
    try:
        demo.wait_until_ready(url)
        screenshot(url, out, chromium)
    finally:
        app.close()
    return out, url, blank_fraction(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="a trained run (default: train a tiny reverse-digits run first)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--chromium", default=None, help="browser binary (default: /usr/bin/chromium)")
    args = parser.parse_args(argv)
    chromium = args.chromium or find_chromium()
    if chromium is None:
        print("error: chromium not found; install it with: apt-get install -y chromium", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxformer-demo-run-") as tmp:
        workdir = Path(args.workdir) if args.workdir else train_tiny_default(Path(tmp) / "run")
        out, url, blank = capture(workdir, Path(args.out), chromium)
    print(f"screenshot of {url} -> {out} ({time.perf_counter() - start:.0f} s; most common colour {blank:.0%})")
    if blank > 0.98:
        print("error: the screenshot is blank; the app did not render", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
