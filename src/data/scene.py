"""Street backgrounds (sky, buildings, trees, sidewalk, road) and object placement for the synthetic scenes.

Backgrounds are side views: sky on top, a row of buildings standing on the sidewalk, the road at the bottom.
Each background piece carries its segmentation class id so the same drawing yields the mask.
"""

from src.data.shapes import hsv, pick_colour

# Segmentation class ids (order of configs/datasets/road_scene_segmentation.yaml).
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, VEHICLE, PERSON, TRAFFIC_SIGN = range(8)


def _sky(rng, width, height, bottom) -> list:
    top = pick_colour(rng, (0.55, 0.62), (0.35, 0.7), (0.75, 0.95))
    if rng.random() < 0.25:  # overcast
        top = pick_colour(rng, (0.55, 0.62), (0.0, 0.1), (0.7, 0.9))
    pieces, band = [], max(2, height // 64)
    for y in range(0, bottom, band):
        t = y / max(1, bottom)
        colour = tuple(round(c + (255 - c) * 0.5 * t) for c in top)
        pieces.append((SKY, ("rect", [(0, y), (width - 1, min(y + band, bottom) - 1)], colour, None, 0)))
    return pieces


def _buildings(rng, width, height, base) -> list:
    pieces, x = [], -int(rng.integers(0, max(2, width // 10)))
    while x < width:
        bw = int(rng.uniform(0.15, 0.35) * width)
        top = int(rng.uniform(0.06, 0.6) * base)
        wall = pick_colour(rng, (0.05, 0.12), (0.08, 0.35), (0.45, 0.85))
        if rng.random() < 0.3:
            wall = pick_colour(rng, (0.0, 1.0), (0.0, 0.06), (0.45, 0.8))
        pieces.append((BUILDING, ("rect", [(x, top), (x + bw - 1, base - 1)], wall, None, 0)))
        lit = rng.random() < 0.5
        win = pick_colour(rng, (0.12, 0.16), (0.2, 0.4), (0.85, 0.95)) if lit else hsv(0.6, 0.2, 0.35)
        ws = max(2, round(0.035 * height))
        for wy in range(top + ws, base - 2 * ws, 2 * ws):
            for wx in range(x + ws, x + bw - 2 * ws, 2 * ws):
                pieces.append((BUILDING, ("rect", [(wx, wy), (wx + ws - 1, wy + ws - 1)], win, None, 0)))
        x += bw
    return pieces


def _trees(rng, width, height, base) -> list:
    pieces = []
    for _ in range(int(rng.integers(0, 4))):
        cx, size = rng.uniform(0, width), rng.uniform(0.15, 0.35) * height
        trunk = max(2, round(size * 0.12))
        crown = pick_colour(rng, (0.25, 0.38), (0.5, 0.85), (0.3, 0.65))
        pieces.append((VEGETATION, ("rect", [(round(cx - trunk / 2), round(base - size * 0.5)),
                                              (round(cx + trunk / 2), base + 1)], (90, 65, 40), None, 0)))
        pieces.append((VEGETATION, ("ellipse", [(round(cx - size / 2), round(base - size * 1.2)),
                                                 (round(cx + size / 2), round(base - size * 0.4))], crown, None, 0)))
    return pieces


def street_background(rng, width: int, height: int, trees: bool) -> tuple[list, dict]:
    """Return `([(seg_class, primitive), ...], geometry)`; geometry holds the sidewalk and road rows."""
    sidewalk_top = int(rng.uniform(0.5, 0.58) * height)
    road_top = sidewalk_top + max(3, int(rng.uniform(0.07, 0.11) * height))
    pieces = _sky(rng, width, height, sidewalk_top) + _buildings(rng, width, height, sidewalk_top)
    if trees:
        pieces += _trees(rng, width, height, sidewalk_top)
    pavement = pick_colour(rng, (0.0, 1.0), (0.0, 0.08), (0.6, 0.78))
    asphalt = pick_colour(rng, (0.0, 1.0), (0.0, 0.06), (0.25, 0.42))
    pieces.append((SIDEWALK, ("rect", [(0, sidewalk_top), (width - 1, road_top - 1)], pavement, None, 0)))
    curb = max(1, height // 100)
    pieces.append((SIDEWALK, ("rect", [(0, road_top - curb), (width - 1, road_top - 1)], (200, 200, 200), None, 0)))
    pieces.append((ROAD, ("rect", [(0, road_top), (width - 1, height - 1)], asphalt, None, 0)))
    lane_y, dash, lw = (road_top + height) // 2, max(6, width // 12), max(1, height // 80)
    offset = int(rng.integers(0, 2 * dash))
    for x in range(-offset, width, 2 * dash):
        pieces.append((ROAD, ("rect", [(x, lane_y - lw), (x + dash - 1, lane_y + lw)], (235, 235, 220), None, 0)))
    return pieces, {"sidewalk_top": sidewalk_top, "road_top": road_top}


def _overlaps(box, boxes, margin: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin
               for b in boxes)


def propose_box(rng, spec: dict, width: int, height: int, geometry: dict) -> tuple[int, int, int, int]:
    """Size and position one object of a class spec: `(x0, y0, w, h)`, possibly a little outside the image."""
    h = max(8, round(rng.uniform(*spec["height"]) * height))
    w = max(8, round(h * rng.uniform(*spec["aspect"])))
    x0 = int(rng.integers(-round(0.2 * w), max(-round(0.2 * w) + 1, width - round(0.8 * w))))
    if spec["stands_on"] == "pole":  # a sign face high above the sidewalk
        low = max(1, round(0.04 * height))
        high = max(low + 1, geometry["sidewalk_top"] - h - round(0.06 * height))
        return x0, int(rng.integers(low, high)), w, h
    ground = geometry["road_top"] + 2 if spec["stands_on"] == "road" else geometry["sidewalk_top"] + 2
    bottom = int(rng.integers(min(max(ground, h), height - 1), height))
    return x0, bottom - h + 1, w, h


def place_objects(rng, specs: dict, count: int, width: int, height: int, geometry: dict, overlap: bool) -> list:
    """Pick `count` objects `(class_name, (x0, y0, w, h))`; without `overlap` their boxes stay apart (exact labels)."""
    names, placed, taken = list(specs), [], []
    for _ in range(count):
        name = names[int(rng.integers(len(names)))]
        for _attempt in range(25):
            x0, y0, w, h = propose_box(rng, specs[name], width, height, geometry)
            clipped = (max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h))
            if overlap or not _overlaps(clipped, taken, margin=2):
                placed.append((name, (x0, y0, w, h)))
                taken.append(clipped)
                break
    return placed
