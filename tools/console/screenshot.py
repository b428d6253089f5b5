"""Screenshot the console of a running stack (for docs/img/console.png).

    python -m tools.console.screenshot --url http://127.0.0.1:8080/ --out docs/img/console.png \\
        --user u_demo --main TEST --sub AAA,BBB --demo-orders

Opens the page in Debian's headless Chromium, logs in as a test-mode user, waits for the
ladder and the chart to fill, optionally places two small orders from the page (a resting
buy below the best bid and a sell that crosses it) so "my orders" and "my fills" show
something, and saves a PNG.

Errors: a page that does not become ready, or a ladder/chart that stays empty, stop the
script with a message (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.ports import DEFAULT_PORTS, LOCAL_HOST

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def best(page, side: str) -> int | None:  # noqa: ANN001 - playwright page
    rows = page.eval_on_selector_all(f"[data-testid={side}-row]", "els => els.map(e => Number(e.dataset.price))")
    if not rows:
        return None
    return max(rows) if side == "bid" else min(rows)


def place(page, side: str, price: int, qty: int) -> None:  # noqa: ANN001
    page.fill("#order-price", str(price))
    page.fill("#order-qty", str(qty))
    page.click("#btn-buy" if side == "BUY" else "#btn-sell")
    page.wait_for_timeout(800)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.console.screenshot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=f"http://{LOCAL_HOST}:{DEFAULT_PORTS['console']}/",
                   help="console URL (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("artifacts/console/console.png"), help="PNG to write")
    p.add_argument("--user", default="u_demo", help="test-mode user id ('' = anonymous)")
    p.add_argument("--main", default="TEST", help="main symbol")
    p.add_argument("--sub", default="AAA,BBB", help="comma-separated sub symbols")
    p.add_argument("--tf", default="1m", help="timeframe button to press")
    p.add_argument("--demo-orders", action="store_true", help="place two small orders from the page first")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=900)
    args = p.parse_args(argv)

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.set_default_timeout(20_000)
            print(f"opening {args.url}", flush=True)
            page.goto(f"{args.url}?main={args.main}&sub={args.sub}")
            page.wait_for_selector("body[data-ready=true]")
            if args.user:
                page.select_option("#conn-mode", "test")
                page.fill("#user-id", args.user)
                page.click("#btn-connect")
            page.wait_for_selector("#conn-state[data-state=open]")
            print("waiting for the ladder and the chart", flush=True)
            page.wait_for_selector("[data-testid=bid-row], [data-testid=ask-row]")
            page.click(f"[data-testid=tf-{args.tf}]")
            page.wait_for_function("() => Number(document.querySelector('#chart').dataset.bars) > 0")
            if args.demo_orders and args.user:
                bid = best(page, "bid")
                if bid is not None:
                    place(page, "BUY", bid - 3, 2)
                    place(page, "SELL", bid, 1)
            page.wait_for_timeout(1500)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
        except PlaywrightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            browser.close()
    print(f"saved {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
