"""Make docs/page.png, the README's picture of the web page: the shipped model served on loopback,
a "3" drawn on the pad in headless Chromium, the answer shown.

    python docs/screenshot.py    (needs the dev extra and Debian's chromium)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import chromium, offline_tab  # noqa: E402
from servers import running_server  # noqa: E402

from service.settings import SHIPPED_MODEL  # noqa: E402

# a "3" in pad coordinates (280 x 280): two bows
STROKE = [(90, 60), (150, 45), (195, 80), (180, 125), (130, 140), (185, 160), (200, 205), (150, 240), (85, 225)]


def main() -> int:
    with running_server(SHIPPED_MODEL, log_format="text") as (base, _), chromium() as browser:
        with offline_tab(browser, base + "/", viewport={"width": 1200, "height": 1100}) as (tab, errors, refused):
            tab.wait_for_function("document.getElementById('strip').dataset.steps === '16'", timeout=30000)
            box = tab.locator("#pad").bounding_box()
            scale = box["width"] / 280
            tab.mouse.move(box["x"] + STROKE[0][0] * scale, box["y"] + STROKE[0][1] * scale)
            tab.mouse.down()
            for x, y in STROKE[1:]:
                tab.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
            tab.mouse.up()
            tab.wait_for_function("document.getElementById('scored').dataset.ink > 0", timeout=30000)
            tab.wait_for_function("document.getElementById('grid').dataset.loaded === '1'", timeout=30000)
            if errors or refused:
                raise SystemExit(f"the page failed: {errors} {refused}")
            out = ROOT / "docs" / "page.png"
            tab.screenshot(path=str(out), full_page=True)
            print(f"wrote {out}: {tab.inner_text('#verdict')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
