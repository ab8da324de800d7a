"""Debian's Chromium for the browser tests, driven by Playwright through `executable_path`: never a downloaded
browser (apt-get install chromium; .ci/run does)."""

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def launch(playwright):
    """A headless Chromium from the system, refused with a clear message when it is not installed."""
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium (apt-get install chromium)"
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def collect_errors(page, problems: list[str]) -> None:
    """Append every console error and uncaught page error of `page` to `problems`."""
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
