"""The package page's plot: an inline SVG drawn on the server (no script, no CSS needed).

x is the log index, y the release counter when every release has one, else the release's
number in log order. A release is a dot coloured by its publisher key; a lifecycle
statement is a mark at its own index on the row of its release (rollout: triangle, halt:
square, yank: cross, resume: diamond), joined to the release by a thin line. The table
beside the plot holds the same data, for screen readers and for copying.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlog.http.explorer.facts import ReleaseRow, Statement, key_name
from tlog.http.explorer.markup import Safe, esc, shown, tag
from verifier.protocol.entries.lifecycle import HALT_KIND, RESUME_KIND, ROLLOUT_KIND, YANK_KIND

WIDTH, HEIGHT = 760, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 104  # the plot area's margins (legend below)
# Dark enough on white for 3:1 (WCAG non-text contrast) and told apart by the legend.
PALETTE = ("#0b5394", "#b45f06", "#38761d", "#741b47", "#134f5c", "#7f6000", "#990000",
           "#351c75")
MARK_COLOUR = {ROLLOUT_KIND: "#1155cc", HALT_KIND: "#b45f06", YANK_KIND: "#cc0000",
               RESUME_KIND: "#222222"}
MARK_NAME = {ROLLOUT_KIND: "rollout", HALT_KIND: "halt", YANK_KIND: "yank",
             RESUME_KIND: "resume"}
MAX_LEGEND_KEYS = 8  # more publishers than colours: the rest share the last colour
MAX_LABELS = 30  # versions written beside their dots; past that, in the dots' titles only


def _scale(lo: int, hi: int, a: float, b: float) -> tuple[float, float]:
    """(factor, offset) mapping [lo, hi] onto [a, b] (the middle when lo == hi)."""
    if hi == lo:
        return 0.0, (a + b) / 2
    factor = (b - a) / (hi - lo)
    return factor, a - lo * factor


def _mark(kind: str, x: float, y: float, label: str) -> Safe:
    colour, title = MARK_COLOUR.get(kind, "#444444"), tag("title", label)
    if kind == ROLLOUT_KIND:
        name, attrs = "path", (f'd="M{x:.1f} {y - 8:.1f} l6 10 h-12 z" fill="#ffffff" '
                               f'stroke="{colour}" stroke-width="2"')
    elif kind == HALT_KIND:
        name, attrs = "rect", (f'x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" '
                               f'fill="{colour}"')
    elif kind == YANK_KIND:
        name, attrs = "path", (f'd="M{x - 6:.1f} {y - 6:.1f} l12 12 m0 -12 l-12 12" '
                               f'stroke="{colour}" stroke-width="3"')
    else:
        name, attrs = "path", f'd="M{x:.1f} {y - 7:.1f} l7 7 l-7 7 l-7 -7 z" fill="{colour}"'
    return Safe(f"<{name} {attrs}>{title}</{name}>")


def svg(package: str, releases: Sequence[ReleaseRow], statements: Sequence[Statement]) -> Safe:
    """The plot of a package's releases and statements (see the module's doc)."""
    by_counter = bool(releases) and all(r.counter is not None for r in releases)
    ys = {r.version: (r.counter if by_counter and r.counter is not None else n + 1)
          for n, r in enumerate(releases)}
    indices = [r.index for r in releases] + [s.index for s in statements]
    x_lo, x_hi = (min(indices), max(indices)) if indices else (0, 0)
    y_lo, y_hi = (min(ys.values()), max(ys.values())) if ys else (0, 0)
    fx, ox = _scale(x_lo, x_hi, LEFT + 10, WIDTH - RIGHT - 10)
    fy, oy = _scale(y_lo, y_hi, HEIGHT - BOTTOM - 10, TOP + 10)
    keys = list(dict.fromkeys(r.key for r in releases))
    colour = {k: PALETTE[min(i, len(PALETTE) - 1)] for i, k in enumerate(keys)}
    y_name = "release counter" if by_counter else "release number"
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="plot-title plot-desc" class="plot">',
        str(tag("title", f"Releases of {shown(package)} over log position",
                {"id": "plot-title"})),
        str(tag("desc", f"{len(releases)} releases and {len(statements)} lifecycle "
                f"statements; x: log index {x_lo} to {x_hi}; y: {y_name} {y_lo} to {y_hi}. "
                "The table below lists the same data.", {"id": "plot-desc"})),
        _axes(x_lo, x_hi, y_lo, y_hi, y_name)]
    for s in statements:
        y = ys.get(s.version)
        if y is None:
            continue  # its release is older than the entries read: listed in the table
        release = next(r for r in releases if r.version == s.version)
        parts.append(f'<line x1="{release.index * fx + ox:.1f}" y1="{y * fy + oy:.1f}" '
                     f'x2="{s.index * fx + ox:.1f}" y2="{y * fy + oy:.1f}" stroke="#999999" />')
    for r in releases:
        label = (f"{shown(r.version)}: entry {r.index}, counter "
                 f"{'none' if r.counter is None else r.counter}, key {shown(r.publisher)}")
        cx, cy = r.index * fx + ox, ys[r.version] * fy + oy
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour[r.key]}">'
                     f'{tag("title", label)}</circle>')
        if len(releases) <= MAX_LABELS:
            parts.append(f'<text x="{cx + 7:.1f}" y="{cy - 7:.1f}" fill="#222222" '
                         f'font-size="11">{esc(shown(r.version, 16))}</text>')
    for s in statements:
        y = ys.get(s.version)
        if y is not None:
            label = f"{shown(s.version)}: {s.describe()} (entry {s.index})"
            parts.append(_mark(s.kind, s.index * fx + ox, y * fy + oy, label))
    parts.append(_legend(keys, colour))
    parts.append("</svg>")
    return Safe("\n".join(parts))


def _axes(x_lo: int, x_hi: int, y_lo: int, y_hi: int, y_name: str) -> str:
    """The axes with their end values; one value in the middle when an axis has one."""
    base, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    text = '<text x="{:.0f}" y="{:.0f}" fill="#222222" font-size="12" text-anchor="{}">{}</text>'
    middle_x, middle_y = (LEFT + right) / 2, (TOP + base) / 2
    parts = [f'<line x1="{LEFT}" y1="{base}" x2="{right}" y2="{base}" stroke="#333333" />',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#333333" />']
    if x_lo == x_hi:
        parts.append(text.format(middle_x, base + 16, "middle", f"log index {x_lo}"))
    else:
        parts += [text.format(LEFT, base + 16, "start", x_lo),
                  text.format(right, base + 16, "end", x_hi),
                  text.format(middle_x, base + 16, "middle", "log index")]
    if y_lo == y_hi:
        parts.append(text.format(LEFT - 6, middle_y + 4, "end", y_lo))
    else:
        parts += [text.format(LEFT - 6, base - 4, "end", y_lo),
                  text.format(LEFT - 6, TOP + 10, "end", y_hi)]
    parts.append(f'<text x="14" y="{middle_y:.0f}" fill="#222222" font-size="12" '
                 f'text-anchor="middle" transform="rotate(-90 14 {middle_y:.0f})">'
                 f'{esc(y_name)}</text>')
    return "\n".join(parts)


def _legend(keys: list[str], colour: dict[str, str]) -> str:
    y = HEIGHT - BOTTOM + 36
    parts = []
    for n, kind in enumerate((ROLLOUT_KIND, HALT_KIND, YANK_KIND, RESUME_KIND)):
        x = LEFT + 90 * n
        parts.append(str(_mark(kind, x + 6, y, MARK_NAME[kind])))
        parts.append(f'<text x="{x + 16}" y="{y + 4}" fill="#222222" font-size="12">'
                     f'{MARK_NAME[kind]}</text>')
    for n, key in enumerate(keys[:MAX_LEGEND_KEYS]):
        x, row = LEFT + 170 * (n % 4), y + 22 * (1 + n // 4)
        parts.append(f'<circle cx="{x + 6}" cy="{row}" r="5" fill="{colour[key]}" />')
        name = shown(key_name(key), 20)
        parts.append(f'<text x="{x + 16}" y="{row + 4}" fill="#222222" font-size="12">'
                     f'{esc(name)}</text>')
    if len(keys) > MAX_LEGEND_KEYS:
        parts.append(f'<text x="{WIDTH - RIGHT}" y="{y + 4}" fill="#222222" font-size="12" '
                     f'text-anchor="end">+{len(keys) - MAX_LEGEND_KEYS} more keys</text>')
    return "\n".join(parts)
