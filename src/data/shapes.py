"""Drawing primitives and the per-class object shapes of the synthetic street scenes.

An object is a list of primitives in its own box. The same list is rendered onto the RGB image and onto
one-channel layers (exact boxes, segmentation masks), so labels always match the pixels.
A primitive is `(kind, points, fill, outline, width)`, kind one of rect / poly / ellipse / line.
Shapes and colours differ per class on purpose: a nano detector trained from scratch on a few hundred of these
images for ~15 epochs must separate them.
"""

import colorsys

DARK = (28, 28, 30)
HUB = (150, 150, 155)
WHITE = (245, 245, 245)
BLACK = (20, 20, 20)


def hsv(h: float, s: float, v: float) -> tuple:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def pick_colour(rng, hue, sat, val) -> tuple:
    return hsv(rng.uniform(*hue), rng.uniform(*sat), rng.uniform(*val))


def _lw(size: float, frac: float, minimum: int = 1) -> int:
    return max(minimum, round(size * frac))


def _wheel(cx: float, cy: float, d: float) -> list:
    r, hub = d / 2, d / 5
    return [("ellipse", [(cx - r, cy - r), (cx + r, cy + r)], DARK, None, 0),
            ("ellipse", [(cx - hub, cy - hub), (cx + hub, cy + hub)], HUB, None, 0)]


def _ring(cx: float, cy: float, d: float, width: int, colour=DARK) -> list:
    r = d / 2
    return [("ellipse", [(cx - r, cy - r), (cx + r, cy + r)], None, colour, width)]


def car(w, h, rng):
    body = pick_colour(rng, (-0.03, 0.03), (0.7, 0.95), (0.6, 0.95))
    glass = pick_colour(rng, (0.52, 0.6), (0.2, 0.45), (0.75, 0.95))
    x, y = w - 1, h - 1
    d = 0.36 * h
    return [
        ("poly", [(0.22 * x, 0.42 * y), (0.33 * x, 0), (0.66 * x, 0), (0.8 * x, 0.42 * y)], body, None, 0),
        ("rect", [(0, 0.4 * y), (x, y - 0.14 * y)], body, None, 0),
        ("poly", [(0.29 * x, 0.4 * y), (0.37 * x, 0.1 * y), (0.48 * x, 0.1 * y), (0.48 * x, 0.4 * y)], glass, None, 0),
        ("poly", [(0.52 * x, 0.4 * y), (0.52 * x, 0.1 * y), (0.63 * x, 0.1 * y), (0.73 * x, 0.4 * y)], glass, None, 0),
        ("rect", [(x - 0.05 * x, 0.5 * y), (x, 0.62 * y)], (250, 230, 120), None, 0),
        *_wheel(0.2 * x, y - d / 2, d), *_wheel(0.78 * x, y - d / 2, d),
    ]


def truck(w, h, rng):
    cab = pick_colour(rng, (0.05, 0.09), (0.8, 1.0), (0.8, 1.0))
    cargo = pick_colour(rng, (0.0, 1.0), (0.0, 0.08), (0.82, 0.96))
    glass = pick_colour(rng, (0.52, 0.6), (0.2, 0.45), (0.75, 0.95))
    x, y = w - 1, h - 1
    d = 0.26 * h
    prims = [
        ("rect", [(0, 0), (0.68 * x, y - 0.16 * y)], cargo, (120, 120, 125), _lw(h, 0.02)),
        ("rect", [(0.71 * x, 0.3 * y), (x, y - 0.16 * y)], cab, None, 0),
        ("rect", [(0.78 * x, 0.36 * y), (0.95 * x, 0.55 * y)], glass, None, 0),
        ("rect", [(0, y - 0.2 * y), (x, y - 0.12 * y)], DARK, None, 0),
    ]
    for fx in (0.2, 0.4):
        prims.append(("line", [(fx * x, 0.08 * y), (fx * x, 0.74 * y)], (150, 150, 155), None, _lw(h, 0.02)))
    for fx in (0.1, 0.28, 0.84):
        prims += _wheel(fx * x, y - d / 2, d)
    return prims


def bus(w, h, rng):
    body = pick_colour(rng, (0.12, 0.16), (0.8, 1.0), (0.85, 1.0))
    glass = pick_colour(rng, (0.58, 0.64), (0.4, 0.7), (0.25, 0.45))
    x, y = w - 1, h - 1
    d = 0.24 * h
    prims = [("rect", [(0, 0), (x, y - 0.1 * y)], body, None, 0),
             ("rect", [(0, 0.62 * y), (x, 0.68 * y)], DARK, None, 0)]
    n = int(rng.integers(5, 8))
    step = 0.86 * x / n
    for i in range(n):
        x0 = 0.03 * x + i * step
        prims.append(("rect", [(x0, 0.12 * y), (x0 + 0.8 * step, 0.45 * y)], glass, None, 0))
    prims.append(("rect", [(0.9 * x, 0.12 * y), (0.97 * x, 0.78 * y)], glass, None, 0))
    return prims + _wheel(0.15 * x, y - d / 2, d) + _wheel(0.8 * x, y - d / 2, d)


def motorcycle(w, h, rng):
    body = pick_colour(rng, (0.75, 0.85), (0.6, 0.9), (0.35, 0.7))
    x, y = w - 1, h - 1
    d = 0.5 * h
    return [
        ("line", [(0.72 * x, 0.05 * y), (x - d / 2, y - d / 2)], (90, 90, 95), None, _lw(h, 0.07, 2)),
        ("line", [(0.7 * x, 0), (0.86 * x, 0.04 * y)], DARK, None, _lw(h, 0.06, 2)),
        *_wheel(d / 2, y - d / 2, d), *_wheel(x - d / 2, y - d / 2, d),
        ("poly", [(0.22 * x, 0.42 * y), (0.42 * x, 0.22 * y), (0.72 * x, 0.22 * y), (0.8 * x, 0.45 * y),
                  (0.58 * x, 0.72 * y), (0.3 * x, 0.72 * y)], body, None, 0),
        ("rect", [(0.12 * x, 0.3 * y), (0.42 * x, 0.4 * y)], BLACK, None, 0),
    ]


def _bicycle_frame(x, y, d, frame, lw, rear_x=None) -> list:
    rear = (d / 2 if rear_x is None else rear_x, y - d / 2)
    front = (x - d / 2, y - d / 2)
    crank = (0.45 * x, y - d / 2)
    seat, head = (0.36 * x, y - 1.35 * d), (0.74 * x, y - 1.4 * d)
    segs = [(rear, crank), (crank, seat), (seat, rear), (seat, head), (head, crank), (head, front)]
    return [("line", [a, b], frame, None, lw) for a, b in segs]


def bicycle(w, h, rng):
    frame = pick_colour(rng, (0.28, 0.4), (0.7, 1.0), (0.5, 0.85))
    x, y = w - 1, h - 1
    d, lw = 0.6 * h, _lw(h, 0.07, 2)
    return [
        *_ring(d / 2, y - d / 2, d, lw), *_ring(x - d / 2, y - d / 2, d, lw),
        *_bicycle_frame(x, y, d, frame, lw),
        ("line", [(0.68 * x, 0.06 * y), (0.74 * x, y - 1.4 * d)], frame, None, lw),
        ("line", [(0.62 * x, 0.04 * y), (0.8 * x, 0.02 * y)], DARK, None, lw),
        ("rect", [(0.26 * x, 0.12 * y), (0.44 * x, 0.2 * y)], BLACK, None, 0),
    ]


def _person_colours(rng):
    skin = pick_colour(rng, (0.04, 0.1), (0.3, 0.6), (0.5, 0.95))
    shirt = pick_colour(rng, (0.0, 1.0), (0.5, 0.9), (0.4, 0.9))
    trousers = pick_colour(rng, (0.0, 1.0), (0.2, 0.6), (0.15, 0.45))
    return skin, shirt, trousers


def pedestrian(w, h, rng):
    skin, shirt, trousers = _person_colours(rng)
    x, y = w - 1, h - 1
    hd = min(0.5 * x, 0.16 * y)
    sleeve = tuple(int(c * 0.8) for c in shirt)
    return [
        ("ellipse", [(0.5 * x - hd / 2, 0), (0.5 * x + hd / 2, hd)], skin, None, 0),
        ("rect", [(0.2 * x, hd + 0.01 * y), (0.8 * x, 0.56 * y)], shirt, None, 0),
        ("rect", [(0, hd + 0.03 * y), (0.17 * x, 0.5 * y)], sleeve, None, 0),
        ("rect", [(0.83 * x, hd + 0.03 * y), (x, 0.5 * y)], sleeve, None, 0),
        ("rect", [(0.22 * x, 0.56 * y), (0.47 * x, y)], trousers, None, 0),
        ("rect", [(0.53 * x, 0.56 * y), (0.78 * x, y)], trousers, None, 0),
        ("rect", [(0.53 * x, 0.96 * y), (0.86 * x, y)], BLACK, None, 0),
        ("rect", [(0.14 * x, 0.96 * y), (0.47 * x, y)], BLACK, None, 0),
    ]


def cyclist(w, h, rng):
    skin, shirt, trousers = _person_colours(rng)
    helmet = pick_colour(rng, (0.0, 1.0), (0.6, 1.0), (0.6, 1.0))
    x, y = w - 1, h - 1
    d, lw = 0.4 * h, _lw(h, 0.05, 2)
    hd = 0.15 * y
    seat, shoulder, hand = (0.36 * x, y - 1.35 * d), (0.55 * x, 0.2 * y), (0.74 * x, y - 1.4 * d)
    crank = (0.45 * x, y - d / 2)
    return [
        *_ring(d / 2, y - d / 2, d, lw), *_ring(x - d / 2, y - d / 2, d, lw),
        *_bicycle_frame(x, y, d, (70, 70, 75), lw),
        ("line", [seat, crank], trousers, None, _lw(h, 0.08, 2)),
        ("line", [seat, shoulder], shirt, None, _lw(h, 0.16, 3)),
        ("line", [shoulder, hand], shirt, None, _lw(h, 0.06, 2)),
        ("ellipse", [(0.55 * x - hd / 2, 0.2 * y - hd - 0.02 * y), (0.55 * x + hd / 2, 0.18 * y)], skin, None, 0),
        ("poly", [(0.55 * x - hd / 2, 0.1 * y), (0.55 * x, 0), (0.55 * x + hd / 2, 0.1 * y)], helmet, None, 0),
    ]


def _octagon(x, y):
    t = 0.29
    return [(t * x, 0), ((1 - t) * x, 0), (x, t * y), (x, (1 - t) * y), ((1 - t) * x, y), (t * x, y), (0, (1 - t) * y),
            (0, t * y)]


def stop(w, h, rng):
    red = pick_colour(rng, (-0.02, 0.02), (0.8, 1.0), (0.7, 0.95))
    x, y = w - 1, h - 1
    prims = [("poly", _octagon(x, y), red, WHITE, _lw(h, 0.06))]
    for i in range(4):  # four white blocks standing in for the letters S T O P
        x0 = (0.2 + 0.155 * i) * x
        prims.append(("rect", [(x0, 0.4 * y), (x0 + 0.11 * x, 0.6 * y)], WHITE, None, 0))
    return prims


def yield_sign(w, h, rng):
    red = pick_colour(rng, (-0.02, 0.02), (0.8, 1.0), (0.7, 0.95))
    x, y = w - 1, h - 1
    return [("poly", [(0, 0), (x, 0), (0.5 * x, y)], red, None, 0),
            ("poly", [(0.2 * x, 0.1 * y), (0.8 * x, 0.1 * y), (0.5 * x, 0.72 * y)], WHITE, None, 0)]


def speed_limit(w, h, rng):
    red = pick_colour(rng, (-0.02, 0.02), (0.8, 1.0), (0.7, 0.95))
    x, y = w - 1, h - 1
    lw = _lw(h, 0.06)
    return [("ellipse", [(0, 0), (x, y)], WHITE, red, _lw(h, 0.13, 2)),
            ("rect", [(0.28 * x, 0.33 * y), (0.47 * x, 0.67 * y)], None, BLACK, lw),
            ("rect", [(0.53 * x, 0.33 * y), (0.72 * x, 0.67 * y)], None, BLACK, lw)]


def no_entry(w, h, rng):
    red = pick_colour(rng, (-0.02, 0.02), (0.8, 1.0), (0.7, 0.95))
    x, y = w - 1, h - 1
    return [("ellipse", [(0, 0), (x, y)], red, WHITE, _lw(h, 0.04)),
            ("rect", [(0.18 * x, 0.41 * y), (0.82 * x, 0.59 * y)], WHITE, None, 0)]


def pedestrian_crossing(w, h, rng):
    blue = pick_colour(rng, (0.58, 0.64), (0.8, 1.0), (0.6, 0.9))
    x, y = w - 1, h - 1
    lw = _lw(h, 0.05, 2)
    return [("rect", [(0, 0), (x, y)], blue, WHITE, _lw(h, 0.05)),
            ("poly", [(0.5 * x, 0.12 * y), (0.88 * x, 0.85 * y), (0.12 * x, 0.85 * y)], WHITE, None, 0),
            ("ellipse", [(0.45 * x, 0.36 * y), (0.55 * x, 0.46 * y)], BLACK, None, 0),
            ("line", [(0.5 * x, 0.46 * y), (0.46 * x, 0.66 * y)], BLACK, None, lw),
            ("line", [(0.46 * x, 0.66 * y), (0.38 * x, 0.8 * y)], BLACK, None, lw),
            ("line", [(0.46 * x, 0.66 * y), (0.56 * x, 0.8 * y)], BLACK, None, lw)]


def place(prims: list, x0: int, y0: int, w: int, h: int, mirror: bool) -> list:
    """Move object-local primitives to image coordinates (optionally mirrored left-right), rounding to pixels."""
    out = []
    for kind, pts, fill, outline, width in prims:
        g = [(round(x0 + ((w - 1) - px if mirror else px)), round(y0 + py)) for px, py in pts]
        if kind in ("rect", "ellipse"):
            (ax, ay), (bx, by) = g
            g = [(min(ax, bx), min(ay, by)), (max(ax, bx), max(ay, by))]
        out.append((kind, g, fill, outline, width))
    return out


def render(draw, prims: list, value=None) -> None:
    """Draw primitives with their colours, or every covered pixel as `value` (for label layers)."""
    for kind, pts, fill, outline, width in prims:
        if value is not None:
            fill = value if fill is not None else None
            outline = value if outline is not None else None
        if kind == "rect":
            draw.rectangle(pts, fill=fill, outline=outline, width=width or 1)
        elif kind == "poly":
            draw.polygon(pts, fill=fill, outline=outline, width=width or 1)
        elif kind == "ellipse":
            draw.ellipse(pts, fill=fill, outline=outline, width=width or 1)
        else:
            draw.line(pts, fill=fill, width=width)
