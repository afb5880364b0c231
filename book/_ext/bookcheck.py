"""A reader's check of the built HTML book (issue 14).

    python book/_ext/bookcheck.py [--static] [--html _build/html] [--out _build/check] [--pages …]

``--static`` (fast, no browser; ``make test``): every internal link of every page points at a file that
exists and, with a ``#fragment``, at an id on that page; every ``<img>`` file exists; no page shows a build
error (a ``{result}`` that rendered as an error: docutils ``problematic``/``system-message``); the theme
shows no untranslated English interface strings (:data:`UI_STRINGS`).

Without ``--static`` (``make check-book``) the static part runs first, then headless Chromium (Debian
``chromium``) opens the front page, section 2.2 and one executed notebook (:data:`DEFAULT_PAGES`) at a
desktop and a phone width, with no network: Chromium is driven over its DevTools pipe
(``--remote-debugging-pipe``, the standard library only), waits for MathJax, and fails on a formula left as
raw LaTeX or rendered as an error, an image that did not load, a request to the network (a CDN), a page
wider than its viewport, an error box or an English interface string. Screenshots land in ``--out``.
Exit status 0 when every check passes, 1 otherwise (each failure is printed with its page).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_PAGES = ("index.html", "book/part2/results.html", "book/experiments/fashion_mnist.html")
VIEWPORTS = (("desktop", 1280, 900, False), ("phone", 412, 860, True))
#: English interface strings of Sphinx, pydata-sphinx-theme, sphinx-book-theme and myst-nb that a Russian
#: book must not show (their Russian catalogues lack some of them).
UI_STRINGS = ("Back to top", "Skip to main content", "Toggle navigation", "Table of Contents", "On this page",
              "previous page", "next page", "Previous", "Next", "Contents", "Search", "Download this page",
              "Print to PDF", "Fullscreen mode", "Show code cell", "Hide code cell", "Copy to clipboard",
              "Light/Dark", "Theme by", "Built with", "Last updated", "By ", "Edit this page", "Show source",
              "Open issue", "Source repository", "Download source file", "Launch")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio")
_SKIP_SCHEMES = ("http", "https", "mailto", "data", "javascript", "tel", "ftp")


# --- the static part ----------------------------------------------------------------------------------

class _Page(HTMLParser):
    """Links, images, ids, error markers and interface text of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.errors: list[str] = []
        self.chrome_text: list[str] = []
        self._article = 0  # depth inside <article> (the page's own text)
        self._hidden = 0  # depth inside <script>, <style>, <template>

    def handle_starttag(self, tag: str, attrs) -> None:
        attributes = dict(attrs)
        for key in ("id", "name"):
            if attributes.get(key):
                self.ids.add(attributes[key])
        classes = (attributes.get("class") or "").split()
        if "problematic" in classes or "system-message" in classes:
            self.errors.append(f"<{tag} class=\"{attributes.get('class')}\">")
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])
        if tag == "img" and attributes.get("src"):
            self.images.append(attributes["src"])
        if tag == "article":
            self._article += 1
        if tag in ("script", "style", "template"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._article = max(0, self._article - 1)
        if tag in ("script", "style", "template"):
            self._hidden = max(0, self._hidden - 1)

    def handle_data(self, data: str) -> None:
        if not self._article and not self._hidden and data.strip():
            self.chrome_text.append(data.strip())


def parse_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def english_ui(texts: list[str]) -> list[str]:
    """The interface strings of :data:`UI_STRINGS` found in ``texts`` (whole words)."""
    found = []
    for text in texts:
        for string in UI_STRINGS:
            if re.search(r"(?<![\w-])" + re.escape(string.strip()) + r"(?![\w-])", text) and string not in found:
                found.append(string)
    return found


def static_check(root: Path) -> list[str]:
    """Broken internal links, missing images, error markers and English interface strings of every page."""
    root = Path(root)
    if not (root / "index.html").is_file():
        return [f"{root}: no index.html — build the book first (make book-smoke)"]
    problems, pages = [], {}
    for path in sorted(root.rglob("*.html")):
        if "_static" in path.relative_to(root).parts or "_sources" in path.relative_to(root).parts:
            continue
        pages[path.resolve()] = parse_page(path)
    for path, page in pages.items():
        name = path.relative_to(root.resolve()).as_posix()
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme in _SKIP_SCHEMES or (parts.scheme and len(parts.scheme) > 1):
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{name}: broken link {href!r} (no file {target.relative_to(root.resolve()) if root.resolve() in target.parents else target})")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse_page(target).ids
                if fragment not in ids:
                    problems.append(f"{name}: broken link {href!r} (no id {fragment!r} on that page)")
        for src in page.images:
            parts = urlsplit(src)
            if parts.scheme in _SKIP_SCHEMES:
                continue
            if not (path.parent / unquote(parts.path)).resolve().is_file():
                problems.append(f"{name}: missing image {src!r}")
        for marker in page.errors:
            problems.append(f"{name}: a build error is rendered on the page ({marker}): a {{result}} key or a "
                            "reference that failed; rebuild and read the build's warnings")
        for string in english_ui(page.chrome_text):
            problems.append(f"{name}: untranslated interface string {string!r}")
    return problems


# --- the browser part ---------------------------------------------------------------------------------

class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (DevTools protocol, NUL-separated JSON)."""

    def __init__(self, executable: str, profile: Path, timeout: float = 60.0) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)

        def child() -> None:  # DevTools reads commands on fd 3 and writes replies on fd 4
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.timeout, self._next_id, self._buffer = timeout, 0, b""
        self.events: list[dict] = []
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=child, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for fd in (to_chrome_r, from_chrome_w, high_r, high_w):
            os.close(fd)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        seen = lambda: any(e.get("method") == method and e.get("sessionId") == session for e in self.events)  # noqa: E731
        while not seen():
            try:
                self.events.append(self._read(deadline))
            except TimeoutError:
                return False
        return True

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it start? try `chromium --headless` by hand)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass


PAGE_CHECK_JS = r"""
(async () => {
  const wait = ms => new Promise(r => setTimeout(r, ms));
  let mathjax = 'none';
  if (window.MathJax && MathJax.Hub) {
    mathjax = await Promise.race([new Promise(r => MathJax.Hub.Queue(() => r('typeset'))), wait(20000).then(() => 'timeout')]);
  }
  document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });
  await Promise.race([Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; }))), wait(10000)]);
  const skip = 'script,style,pre,code,textarea,.MathJax_Preview,.MJX_Assistive_MathML';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  while (walker.nextNode()) {
    const node = walker.currentNode, parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const text = node.nodeValue;
    if (/\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\frac|\\mathrm/.test(text)) raw.push(text.trim().slice(0, 100));
  }
  const article = document.querySelector('article') || document.body;
  const scrolls = e => { for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
    if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) return true; } return false; };
  const clipped = [...article.querySelectorAll('h1, h2, h3, h4, p, li, img, table, figure, pre, div.math')]
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && !scrolls(e) && (r.right > window.innerWidth + 1
      || (/^(H[1-4]|P|LI)$/.test(e.tagName) && e.scrollWidth > e.clientWidth + 1)); })
    .map(e => e.tagName.toLowerCase() + ' ' + JSON.stringify((e.innerText || e.getAttribute('src') || '').slice(0, 60)));
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('article, script, style').forEach(e => e.remove());
  return {
    mathjax,
    formulas: document.querySelectorAll('.math').length,
    rendered: document.querySelectorAll('.mjx-chtml, .MathJax_CHTML, mjx-container').length,
    raw,
    mathErrors: [...document.querySelectorAll('.mjx-merror, .MathJax_Error, merror')].map(e => e.textContent.slice(0, 100)),
    brokenImages: [...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.getAttribute('src')),
    errorBoxes: [...document.querySelectorAll('.problematic, .system-message')].map(e => e.textContent.slice(0, 100)),
    clipped,
    scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    innerWidth: window.innerWidth,
    chrome: clone.innerText || clone.textContent,
    title: document.title,
    articleText: article.innerText.slice(0, 200),
  };
})()
"""


def _local(url: str, root_url: str) -> bool:
    return url.startswith(("file:", "data:", "about:", "blob:", "chrome", "devtools")) or url.startswith(root_url)


def browser_check(root: Path, out: Path, pages: tuple[str, ...], chromium: str) -> list[str]:
    """Open each page at each viewport; return the problems found, write screenshots into ``out``."""
    problems = []
    out.mkdir(parents=True, exist_ok=True)
    root_url = Path(root).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="bookcheck-profile-") as profile:
        browser = Browser(chromium, Path(profile))
        try:
            for page in pages:
                path = Path(root) / page
                if not path.is_file():
                    problems.append(f"{page}: not built (no {path})")
                    continue
                for label, width, height, mobile in VIEWPORTS:
                    problems += _check_page(browser, path.resolve().as_uri(), page, label, width, height, mobile,
                                            out, root_url)
        finally:
            browser.close()
    return problems


def _check_page(browser: Browser, url: str, page: str, label: str, width: int, height: int, mobile: bool,
                out: Path, root_url: str) -> list[str]:
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    where = f"{page} ({label} {width}px)"
    try:
        for domain in ("Page", "Network", "Runtime"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session)
        browser.events.clear()
        browser.send("Page.navigate", {"url": url}, session)
        if not browser.wait_event("Page.loadEventFired", session, 60):
            return [f"{where}: the page did not finish loading in 60 s"]
        result = browser.send("Runtime.evaluate", {"expression": PAGE_CHECK_JS, "awaitPromise": True,
                                                   "returnByValue": True}, session)
        if "exceptionDetails" in result:
            return [f"{where}: the check script failed: {result['exceptionDetails'].get('text')}"]
        found = result["result"]["value"]
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session)
        name = page.removesuffix(".html").replace("/", "_")
        (out / f"{name}-{label}.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.send("Target.closeTarget", {"targetId": target})
    problems = []
    external = sorted({e["params"]["request"]["url"] for e in browser.events
                       if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session
                       and not _local(e["params"]["request"]["url"], root_url)})
    problems += [f"{where}: requests the network: {u}" for u in external]
    if found["formulas"] and found["mathjax"] != "typeset":
        problems.append(f"{where}: {found['formulas']} formulas but MathJax did not typeset them ({found['mathjax']})")
    problems += [f"{where}: formula left as raw LaTeX: {text!r}" for text in found["raw"][:5]]
    problems += [f"{where}: formula rendered as an error: {text!r}" for text in found["mathErrors"][:5]]
    problems += [f"{where}: image did not load: {src}" for src in found["brokenImages"]]
    problems += [f"{where}: error box on the page: {text!r}" for text in found["errorBoxes"][:5]]
    if found["scrollWidth"] > found["innerWidth"] + 1:
        problems.append(f"{where}: the page is wider than the viewport ({found['scrollWidth']} px > {found['innerWidth']} px)")
    problems += [f"{where}: runs past the right edge of the screen: {text}" for text in found["clipped"][:5]]
    problems += [f"{where}: untranslated interface string {s!r}" for s in english_ui(found["chrome"].splitlines())]
    print(f"[bookcheck] {where}: {found['formulas']} formulas, {found['rendered']} rendered, MathJax {found['mathjax']}, "
          f"width {found['scrollWidth']}/{found['innerWidth']} px, title {found['title']!r}", flush=True)
    return problems


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python book/_ext/bookcheck.py", description=__doc__.split("\n")[0])
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="the built HTML book")
    parser.add_argument("--out", type=Path, default=Path("_build/check"), help="where screenshots go")
    parser.add_argument("--static", action="store_true", help="links, images, errors and strings only; no browser")
    parser.add_argument("--pages", nargs="+", default=list(DEFAULT_PAGES), help="pages for the browser, relative to --html")
    args = parser.parse_args(argv)
    problems = static_check(args.html)
    print(f"[bookcheck] static: {len(list(args.html.rglob('*.html')))} HTML files, {len(problems)} problem(s)", flush=True)
    if not args.static and not any("no index.html" in p for p in problems):
        chromium = find_chromium()
        if chromium is None:
            problems.append("no Chromium: install it (apt-get install chromium; `make check-book` does) or run --static")
        else:
            problems += browser_check(args.html, args.out, tuple(args.pages), chromium)
    for problem in problems:
        print(f"[bookcheck] FAIL {problem}", file=sys.stderr)
    if problems:
        print(f"[bookcheck] {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("[bookcheck] all checks passed" + ("" if args.static else f"; screenshots in {args.out}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
