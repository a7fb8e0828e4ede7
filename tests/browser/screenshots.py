"""The README's screenshots of the explorer: a demo log (its own PostgreSQL, two witnesses,
the browser tests' releases without the hostile one), its pages in headless Chromium at
1280x800, saved as home.png, package.png and entry.png (the entry once the in-browser check
says "Verified").

    PYTHONPATH=. .venv/bin/python -m tests.browser.screenshots [OUTDIR]   # docs/screenshots

Needs Chromium and chromedriver (deploy/ensure-chromium.sh) and the PostgreSQL server
binaries (deploy/ensure-postgres.sh). The PNGs are written again with a palette of their
256 most frequent colours (shrink_png), which takes them to less than half the size.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

from tests.browser.chromium import chromium, missing, wait_for_result
from tests.browser.demolog import running_demo_log
from tests.conftest import REPO, _create_database
from tlog.cli.pgcluster import Cluster

PAGES = (("home.png", "/"), ("package.png", "/package/acme-lib"))
ENTRY = "acme-lib 2.0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        out.append((data[at + 4:at + 8], data[at + 8:at + 8 + length]))
        at += 12 + length
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> list[bytearray]:
    """The scanlines of an 8-bit, non-interlaced image, PNG filters undone."""
    stride, rows, prev = width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1)
                                                          * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + (0, a, b, (a + b) >> 1, _paeth(a, b, c))[kind]) & 0xFF
        rows.append(line)
        prev = line
    return rows


def _palette(rows: list[bytearray], bpp: int) -> tuple[list[bytes], bytes]:
    """The 256 most frequent colours, and the image as indices into them filtered "None";
    a rarer colour (an anti-aliasing shade, a few pixels in a thousand on these pages) is
    drawn in the nearest kept one."""
    count = Counter(bytes(row[i:i + 3]) for row in rows for i in range(0, len(row), bpp))
    keep = [colour for colour, _ in count.most_common(256)]
    index = {colour: i for i, colour in enumerate(keep)}
    for colour in count:
        if colour not in index:
            index[colour] = min(range(len(keep)), key=lambda i: sum(
                (a - b) ** 2 for a, b in zip(colour, keep[i], strict=True)))
    out = bytearray()
    for row in rows:
        out.append(0)
        out += bytes(index[bytes(row[i:i + 3])] for i in range(0, len(row), bpp))
    return keep, bytes(out)


def shrink_png(data: bytes) -> bytes:
    """The picture as an 8-bit palette PNG (less than half Chromium's RGB one, looking the
    same); the input unchanged unless it is the opaque 8-bit RGB or RGBA PNG Chromium
    writes."""
    chunks = _chunks(data)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or interlace or colour not in (2, 6):
        return data
    bpp = 4 if colour == 6 else 3
    rows = _unfilter(zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT")),
                     width, height, bpp)
    if bpp == 4 and any(row[3::4] != b"\xff" * width for row in rows):
        return data  # transparent somewhere: keep it as it is
    palette, pixels = _palette(rows, bpp)
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    out = (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"PLTE", b"".join(palette))
           + _chunk(b"IDAT", zlib.compress(pixels, 9)) + _chunk(b"IEND", b""))
    return out if len(out) < len(data) else data


def take(url: str, index: int, outdir: Path) -> list[Path]:
    saved = []
    with chromium(1280, 800) as driver:
        # The window's size includes what a headed browser would draw around the page: set
        # the page's own.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        for name, path in PAGES:
            driver.get(url + path)
            saved.append(_save(driver, outdir / name))
        driver.get(f"{url}/entry/{index}")
        if wait_for_result(driver) != "verified":
            raise SystemExit(f"the entry page did not verify: "
                             f"{driver.find_element('id', 'verify-status').text}")
        # The check's result and its steps are what this picture is for: bring them up.
        driver.execute_script("document.getElementById('proof-h').scrollIntoView()")
        saved.append(_save(driver, outdir / "entry.png"))
    return saved


def _save(driver: object, path: Path) -> Path:
    png = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
    path.write_bytes(shrink_png(png))
    return path


def main(argv: list[str]) -> int:
    outdir = Path(argv[0]) if argv else REPO / "docs" / "screenshots"
    why = missing()
    if why is not None:
        print(f"screenshots: {why}", file=sys.stderr)
        return 1
    outdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="tlog-screenshots-"))
    home.chmod(0o755)  # the postgres user must reach it when run as root
    cluster = Cluster(home / "postgres")
    cluster.init()
    cluster.start(fsync=False)  # a throwaway demo
    try:
        url = asyncio.run(_create_database(cluster, "demo"))
        (home / "log").mkdir()
        with running_demo_log(url, home / "log", hostile=False) as log:
            for path in take(log.url, log.indices[ENTRY], outdir):
                print(f"{path} ({path.stat().st_size // 1024} KiB)")
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
