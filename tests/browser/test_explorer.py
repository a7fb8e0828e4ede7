"""The web explorer end to end in headless Chromium: a real witnessed log, the pages a person
sees, the in-browser check against an honest log and against logs that lie, hostile entry
content, no JavaScript, pinned keys, and the Content-Security-Policy (every test: the
autouse fixture in conftest.py fails it on any violation Chromium reports)."""

from __future__ import annotations

import html
import re
import struct
import time
import urllib.request
import zlib
from typing import Any

import pytest

pytest.importorskip("selenium", reason="the selenium package is missing: pip install -e '.[test]'")

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import screenshots
from tests.browser.chromium import wait_for_result
from tests.browser.demolog import (
    HOSTILE_ARTIFACT,
    HOSTILE_METADATA,
    HOSTILE_PUBLISHER,
    HOSTILE_VERSION,
    ORIGIN,
    WITNESSES,
    DemoLog,
)
from tests.browser.proxy import MisbehavingLog

PINNED_KEY_REASON = "the log's key differs from the one you pinned"


def _text(driver: Any, css: str) -> str:
    text: str = driver.find_element(By.CSS_SELECTOR, css).text
    return text


def _all(driver: Any, css: str) -> list[Any]:
    found: list[Any] = driver.find_elements(By.CSS_SELECTOR, css)
    return found


def _no_alert(driver: Any) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"a dialog opened: {text!r}")


def _only_the_explorers_scripts(driver: Any) -> None:
    """No script element but the explorer's own file, and no element an entry's strings
    could have made in the body (img, iframe, style, link, svg outside the plot, a form
    but the search, ...) nor any event handler attribute."""
    scripts = driver.execute_script(
        "return Array.from(document.scripts, s => [s.src && new URL(s.src).pathname, s.text])")
    assert all(src == "/static/explorer.js" and not text for src, text in scripts), scripts
    injected = driver.execute_script("""
        const bad = document.querySelectorAll(['img', 'iframe', 'object', 'embed', 'style',
            'link', 'meta', 'base', 'form:not([role=search])', 'svg:not(#plot svg)'].map(
            tag => 'body ' + tag).join(', '));
        const handlers = Array.from(document.querySelectorAll('*')).filter(
            e => Array.from(e.attributes).some(a => a.name.startsWith('on')));
        return [...bad, ...handlers].map(e => e.outerHTML.slice(0, 200));""")
    assert injected == []


def _click_to_next_page(driver: Any, element: Any) -> None:
    """Click, and wait until the next page replaced this one (a click does not wait)."""
    html = driver.find_element(By.TAG_NAME, "html")
    element.click()
    # generous: the suite's other processes share the machine's cores with the browser
    WebDriverWait(driver, 30).until(staleness_of(html))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def _search(driver: Any, text: str) -> None:
    """Type `text` in the search form of this page and submit it with its button."""
    driver.find_element(By.ID, "q").send_keys(text)
    _click_to_next_page(driver, driver.find_element(By.CSS_SELECTOR,
                                                     "form[role=search] [type=submit]"))


def _page_basics(driver: Any, h1: str) -> None:
    """What every explorer page has: English, one h1, the site link home, the search form."""
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert [e.text for e in _all(driver, "h1")] == [h1]
    assert _all(driver, "main#main")
    assert _all(driver, "a[href='/']")
    form = driver.find_element(By.CSS_SELECTOR, "form[role=search]")
    assert form.get_attribute("action").endswith("/search")
    assert _text(driver, "label[for=q]") == "Package"


def test_home_page_shows_the_cosigned_checkpoint_and_recent_releases(
        browser: Any, demo: DemoLog) -> None:
    browser.get(demo.url + "/")
    _page_basics(browser, "tlog explorer")
    size = max(demo.indices.values()) + 1  # the fill's last release, then its map root
    assert int(_text(browser, "#checkpoint #tree-size")) >= size
    assert demo.signer.name in _text(browser, "#checkpoint")
    cosigners = [e.text for e in _all(browser, "#checkpoint li.cosigner")]
    assert len(cosigners) == len(WITNESSES)
    for name in WITNESSES:
        assert any(name in c for c in cosigners), cosigners
    links = [a.get_attribute("href") for a in _all(browser, "#recent a")]
    assert any(h.endswith("/package/acme-lib") for h in links), links
    assert any(h.endswith(f"/entry/{demo.indices['acme-lib 2.0']}") for h in links), links


def test_search_finds_a_package_and_leads_to_its_page_with_the_plot(
        browser: Any, demo: DemoLog) -> None:
    browser.get(demo.url + "/")
    _search(browser, "acme")
    results = _all(browser, "#results li a")
    assert [a.text for a in results] == ["acme-lib"]
    _click_to_next_page(browser, results[0])
    _package_page(browser, demo)


def test_an_exact_search_reaches_the_package(browser: Any, demo: DemoLog) -> None:
    browser.get(demo.url + "/search?q=acme-lib")
    if not browser.current_url.endswith("/package/acme-lib"):  # or a one-result list
        _click_to_next_page(browser, browser.find_element(
            By.CSS_SELECTOR, "#results a[href='/package/acme-lib']"))
    _package_page(browser, demo)


def _package_page(driver: Any, demo: DemoLog) -> None:
    assert driver.current_url.endswith("/package/acme-lib")
    _page_basics(driver, "acme-lib")
    rows = _all(driver, "#releases tbody tr")
    versions = ["1.0", "1.1", "1.2", "2.0"]
    assert len(rows) == len(versions)
    table = _text(driver, "#releases")
    for v in versions:
        assert f"/entry/{demo.indices[f'acme-lib {v}']}" in driver.page_source
    assert "yank" in table.lower()  # 1.1 was halted, then yanked
    assert "acme-release-bot" in table
    plot = driver.find_element(By.CSS_SELECTOR, "#plot svg")
    assert plot.get_attribute("role") == "img"
    assert _all(driver, "#plot svg > title")
    assert plot.size["width"] > 100 and plot.size["height"] > 50
    plotted = plot.get_attribute("textContent")
    assert "2.0" in plotted and "1.0" in plotted


def _verified(driver: Any) -> None:
    assert wait_for_result(driver) == "verified", _text(driver, "#verify-status")
    assert _text(driver, "#verify-status").startswith("Verified")
    steps = _all(driver, "#verify-steps li")
    assert len(steps) >= 4, [s.text for s in steps]  # signature, cosignatures, quorum, ...
    assert [s.get_attribute("data-ok") for s in steps] == ["true"] * len(steps), \
        [(s.text, s.get_attribute("data-ok")) for s in steps]


@pytest.mark.parametrize("what", ["acme-lib 2.0", "acme-lib 1.1", "yank acme-lib 1.1",
                                  "example.org/tools 1.1.0"])
def test_an_entry_verifies_in_the_browser(browser: Any, demo: DemoLog, what: str) -> None:
    index = demo.indices[what]
    browser.get(f"{demo.url}/entry/{index}")
    _page_basics(browser, f"Entry {index}")
    assert _all(browser, "#leaf-hash")
    _verified(browser)
    keys = browser.find_element(By.ID, "keys-used")
    assert demo.vkey in keys.text
    for name in WITNESSES:
        assert name in keys.text
    # The button runs the check again, to the same end.
    browser.find_element(By.ID, "verify").click()
    _verified(browser)


@pytest.mark.parametrize(("mode", "reason"), [
    ("proof", "inclusion proof"), ("signature", "signature by " + ORIGIN),
    ("root", "cosignature by"), ("state", "map proof")])
def test_a_lying_log_fails_the_check_with_a_reason(
        browser: Any, demo: DemoLog, misbehaving: MisbehavingLog, mode: str,
        reason: str) -> None:
    """proof: a flipped byte in an inclusion proof; signature: a checkpoint the log key did
    not sign; root: a root the log signed but the witnesses never saw; state: a package
    state the map does not hold. Each fails, saying why, at the step that caught it."""
    browser.get(f"{misbehaving.urls[mode]}/entry/{demo.indices['acme-lib 2.0']}")
    assert wait_for_result(browser) == "failed"
    status = _text(browser, "#verify-status")
    assert status.startswith("Failed: ") and reason in status, status
    failed = [s.text for s in _all(browser, "#verify-steps li")
              if s.get_attribute("data-ok") == "false"]
    assert len(failed) == 1 and status.removeprefix("Failed: ") in failed[0], failed


def test_the_proxy_alone_breaks_nothing(browser: Any, demo: DemoLog,
                                        misbehaving: MisbehavingLog) -> None:
    """The control for the lying logs: the same proxy, rewriting nothing, verifies."""
    browser.get(f"{misbehaving.urls['honest']}/entry/{demo.indices['acme-lib 2.0']}")
    _verified(browser)


def test_hostile_entry_content_shows_as_text_and_runs_nothing(
        browser: Any, demo: DemoLog) -> None:
    """Every string of a release is the publisher's: script, markup, attribute breakouts,
    a closing </pre> and a bidirectional override must show as text and make no element."""
    index = demo.indices["hostile"]
    browser.get(f"{demo.url}/entry/{index}")
    shown = _text(browser, "#entry-json")
    for s in (HOSTILE_VERSION, HOSTILE_PUBLISHER, HOSTILE_ARTIFACT,
              *(v for k, v in HOSTILE_METADATA.items() if k != "bidi")):
        assert s.replace('"', '\\"') in shown or s in shown, s
    # A right-to-left override would show "gnp.exe" as "exe.png": it is written as an escape.
    assert "\\u202e" in shown.lower() and "\u202e" not in browser.page_source
    _verified(browser)  # hostile text, still an honest entry
    _no_alert(browser)
    _only_the_explorers_scripts(browser)
    for path in ("/", "/package/hostile", "/search?q=host"):
        browser.get(demo.url + path)
        _no_alert(browser)
        _only_the_explorers_scripts(browser)
    browser.get(demo.url + "/package/hostile")
    assert HOSTILE_VERSION in _text(browser, "#releases")


def _served_status(url: str) -> str:
    """The text of #verify-status as the server wrote it, before any script ran."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        page = resp.read().decode()
    found = re.search(r'<p id="verify-status"[^>]*>([^<]*)</p>', page)
    assert found, page
    return html.unescape(found.group(1)).strip()


def test_pages_work_without_javascript(browser: Any, demo: DemoLog) -> None:
    """Everything but the in-browser check: the checkpoint, the search form, the plot, the
    entry and its leaf hash."""
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.get(demo.url + "/")
        assert int(_text(browser, "#tree-size")) > 0
        _search(browser, "example.org/")
        _click_to_next_page(browser, browser.find_element(
            By.CSS_SELECTOR, "#results a[href='/package/example.org/tools']"))
        assert _all(browser, "#plot svg") and len(_all(browser, "#releases tbody tr")) == 4
        index = demo.indices["example.org/tools 1.1.0"]
        browser.get(f"{demo.url}/entry/{index}")
        assert '"example.org/tools"' in _text(browser, "#entry-json")
        assert len(_text(browser, "#leaf-hash")) >= 64
        time.sleep(0.5)  # a check would have had time to start
        status = browser.find_element(By.ID, "verify-status")
        assert status.get_attribute("data-result") == "pending"
        assert status.text == _served_status(f"{demo.url}/entry/{index}")  # untouched
        assert _all(browser, "#verify-steps li") == []
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_pinned_keys_catch_a_log_that_changed_its_key(
        browser: Any, demo: DemoLog, misbehaving: MisbehavingLog) -> None:
    """A log (or whoever serves its pages) that switched to another key, and serves pages
    naming it, passes a first visit: the pinned key of an earlier visit is what fails it."""
    url = f"{misbehaving.urls['pinning']}/entry/{demo.indices['acme-lib 1.2']}"
    rewriter = misbehaving.rewriters["pinning"]
    try:
        browser.get(url)
        _verified(browser)
        browser.find_element(By.ID, "pin-keys").click()
        pins = browser.execute_script(
            "return Object.keys(localStorage).filter(k => k.startsWith('tlog-pins:'))")
        assert pins == [f"tlog-pins:{demo.signer.name}"]
        rewriter.mode = "other-key"
        browser.get(url)
        assert wait_for_result(browser) == "failed"
        assert PINNED_KEY_REASON in _text(browser, "#verify-status")
        browser.find_element(By.ID, "unpin-keys").click()
        browser.get(url)
        _verified(browser)  # unpinned, the other key is trusted on first use again
    finally:
        rewriter.mode = "honest"
        browser.execute_script("localStorage.clear()")


def _pixels(png: bytes) -> list[bytes]:
    """Each pixel's RGB of an 8-bit RGB, RGBA or palette PNG (screenshots.py's kinds)."""
    chunks = screenshots._chunks(png)
    width, height, _, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    bpp = {2: 3, 6: 4, 3: 1}[colour]
    rows = screenshots._unfilter(zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT")),
                                 width, height, bpp)
    if colour == 3:
        plte = next(b for k, b in chunks if k == b"PLTE")
        return [plte[3 * i:3 * i + 3] for row in rows for i in row]
    return [bytes(row[i:i + 3]) for row in rows for i in range(0, len(row), bpp)]


def test_the_readme_screenshots_shrink_without_changing_the_picture(
        browser: Any, demo: DemoLog) -> None:
    """The screenshot script's palette PNG: the same pixels where a picture has at most 256
    colours (a heading here), and a valid, smaller file."""
    browser.get(f"{demo.url}/package/acme-lib")
    png = browser.find_element(By.CSS_SELECTOR, "h1").screenshot_as_png
    small = screenshots.shrink_png(png)
    assert len(small) < len(png)
    assert len(set(_pixels(png))) <= 256
    assert _pixels(small) == _pixels(png)
