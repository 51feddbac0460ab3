"""`street-scene convert` refuses bad input with one `error:` line and exit 2, and leaves nothing behind: no
output folder, no hidden build folder, no new parent folders, the source untouched."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.cli.main import main
from src.data.synthetic import _host
from tests.convert_fixtures import (CITYSCAPES_FRAMES, kitti_line, leftovers, make_bdd, make_cityscapes, make_coco,
                                    make_kitti, tree_digest)
from tests.helpers import REPO_ROOT, subprocess_env


def kitti(tmp):
    return ["kitti", make_kitti(tmp / "src" / "kitti", n=3), "--task", "vehicle_detection"]


def bdd(tmp):
    labels, images = make_bdd(tmp / "src" / "bdd")
    return ["bdd100k", labels, "--images", images, "--task", "vehicle_detection"]


def coco(tmp):
    labels, images = make_coco(tmp / "src" / "coco")
    return ["coco", labels, "--images", images, "--task", "vehicle_detection"]


def cityscapes(tmp, task="cityscapes"):
    return ["cityscapes", make_cityscapes(tmp / "src" / "cs"), "--split", "train", "--task", task]


def with_map(text):
    def build(tmp):
        path = tmp / "src" / "map.yaml"
        args = kitti(tmp)
        path.write_text(text)
        return [*args, "--map", path]
    return build


def edited(base, edit):
    """`base` arguments after `edit(tmp, args)` damaged the source."""
    def build(tmp):
        args = base(tmp)
        edit(tmp, args)
        return args
    return build


def _json_edit(change):
    def edit(tmp, args):
        path = Path(args[1])
        data = json.loads(path.read_text())
        path.write_text(json.dumps(change(data)) if callable(change) else change)
    return edit


def _remove(rel):
    return lambda tmp, args: (tmp / "src" / rel).unlink()


def _add_image(rel, size=(96, 64)):
    return lambda tmp, args: Image.new("RGB", size).save(tmp / "src" / rel)


def _write(rel, text):
    return lambda tmp, args: (tmp / "src" / rel).write_text(text)


def _bad_mask(tmp, args):
    city, name = CITYSCAPES_FRAMES[2]  # the last one written, so earlier files are already in the build folder
    mask = tmp / "src" / "cs" / "gtFine" / "train" / city / f"{name}_gtFine_labelIds.png"
    Image.fromarray(np.full((32, 64), 200, np.uint8)).save(mask)


CASES = [
    # (id, arguments builder, the error line must match)
    ("missing kitti src", lambda tmp: ["kitti", tmp / "nope", "--task", "vehicle_detection"], r"does not exist"),
    ("missing json src", lambda tmp: ["coco", tmp / "nope.json", "--images", tmp / "imgs", "--task", "vehicle_detection"],
     r"COCO instances file .*nope.json does not exist"),
    ("kitti without label_2", edited(kitti, lambda tmp, a: os.rename(a[1] / "label_2", a[1] / "labels")),
     r"is not a KITTI object-detection folder: it needs image_2/ and label_2/"),
    ("kitti parent folder", lambda tmp: ["kitti", make_kitti(tmp / "src" / "kitti" / "training").parent, "--task",
                                         "vehicle_detection"], r"did you mean .*training\?"),
    ("kitti image without label", edited(kitti, _add_image("kitti/image_2/000009.png")),
     r"1 image\(s\) without a label file \(e.g. 000009\)"),
    ("kitti label without image", edited(kitti, _write("kitti/label_2/000007.txt", "")),
     r"1 label file\(s\) without an image \(e.g. 000007\)"),
    ("kitti 14 fields", edited(kitti, _write("kitti/label_2/000001.txt", "Car 0 0 0 1 2 3 4 1 1 1 1 1 1\n")),
     r"000001.txt line 1: 14 fields, expected 15"),
    ("kitti non-numeric box", edited(kitti, _write("kitti/label_2/000001.txt", kitti_line("Car", 1, 2, 3, 4)
                                                   .replace(" 1.00 2.00", " x 2.00"))),
     r"line 1: the box .* is not four finite numbers"),
    ("bdd malformed json", edited(bdd, _json_edit('[{"name": "a.jpg", "labels": [}')),
     r"is not valid JSON \(.* at line 1 column"),
    ("coco malformed json", edited(coco, _json_edit('{"images": [')), r"is not valid JSON"),
    ("bdd given coco json", lambda tmp: ["bdd100k", make_coco(tmp / "src" / "c")[0], "--images",
                                         tmp / "src" / "c" / "val2017", "--task", "vehicle_detection"],
     r"looks like a COCO instances file, not BDD100K labels"),
    ("coco given bdd json", lambda tmp: ["coco", make_bdd(tmp / "src" / "b")[0], "--images",
                                         tmp / "src" / "b" / "images", "--task", "vehicle_detection"],
     r"is not a COCO instances file: expected a JSON object"),
    ("bdd image without labels", edited(bdd, _add_image("bdd/images/extra.jpg")),
     r"1 image\(s\) in the folder without labels \(e.g. extra.jpg\)"),
    ("bdd labelled image missing", edited(bdd, _remove("bdd/images/b1c81faa-3df17267.jpg")),
     r"1 labelled image\(s\) missing from the folder \(e.g. b1c81faa-3df17267.jpg\)"),
    ("bdd box2d broken", edited(bdd, _json_edit(lambda d: [{**d[0], "labels": [{"category": "car", "box2d":
                                                                                {"x1": 1}}]}, *d[1:]])),
     r"box2d .* is not four finite numbers"),
    ("coco image missing", edited(coco, _remove("coco/val2017/000000000285.jpg")),
     r"1 labelled image\(s\) missing from the folder"),
    ("coco unknown category", edited(coco, _json_edit(lambda d: {**d, "annotations": d["annotations"] + [
        {"id": 77, "image_id": 139, "category_id": 5, "bbox": [1, 1, 2, 2], "iscrowd": 0}]})),
     r"annotation 77 has category_id 5, which is not in 'categories'"),
    ("coco wrong image size", edited(coco, _json_edit(lambda d: {**d, "images": [{**d["images"][0], "width": 99},
                                                                                 *d["images"][1:]]})),
     r"000000000139.jpg is 120x80 px, but the instances file says 99x80"),
    ("coco without images", lambda tmp: ["coco", make_coco(tmp / "src" / "c")[0], "--task", "vehicle_detection"],
     r"coco needs --images DIR"),
    ("kitti with images", lambda tmp: [*kitti(tmp), "--images", tmp], r"--images is for bdd100k and coco"),
    ("cityscapes without split", lambda tmp: cityscapes(tmp)[:2] + ["--task", "cityscapes"],
     r"cityscapes needs --split train\|val\|test"),
    ("cityscapes wrong split", edited(cityscapes, lambda tmp, a: a.__setitem__(3, "val")),
     r"Cityscapes split folder .*leftImg8bit/val does not exist"),
    ("cityscapes no gtFine", edited(cityscapes, lambda tmp, a: os.rename(a[1] / "gtFine", a[1] / "gt")),
     r"is not a Cityscapes root: it needs leftImg8bit/ and gtFine/"),
    ("cityscapes image without mask",
     edited(cityscapes, _remove("cs/gtFine/train/bremen/bremen_000000_000019_gtFine_labelIds.png")),
     r"1 image\(s\) without a gtFine labelIds mask \(e.g. bremen_000000_000019\)"),
    ("cityscapes damaged mask, found while writing", edited(cityscapes, _bad_mask),
     r"has value\(s\) 200 that are not label ids"),
    ("map target unknown", with_map("Car: automobile\n"),
     r"--map .* maps 'Car' to 'automobile', which is not a class of vehicle_detection"),
    ("map target close", with_map("Car: cars\n"), r"did you mean 'car'\?"),
    ("map not a mapping", with_map("- Car\n- car\n"), r"must be a non-empty YAML mapping"),
    ("map malformed yaml", with_map("Car: [car\n"), r"map.yaml, line"),
    ("map cityscapes source typo", lambda tmp: [*cityscapes(tmp), "--map", _map(tmp, "trafic sign: traffic_sign\n")],
     r"'trafic sign' is not a cityscapes class \(did you mean 'traffic sign'\?\)"),
    ("no default mapping", lambda tmp: [*kitti(tmp)[:2], "--task", "traffic_sign_detection"],
     r"kitti has no default class mapping for traffic_sign_detection; pass --map"),
    ("unknown task", lambda tmp: [*kitti(tmp)[:2], "--task", "lane_detection"],
     r"unknown --task 'lane_detection' for kitti: .* defines the detection subtasks vehicle_detection"),
    ("wrong family config", lambda tmp: [*kitti(tmp), "--config", REPO_ROOT / "configs" / "segmentation_config.yaml"],
     r"is a segmentation config, but kitti converts to detection"),
    ("seed without val fraction", lambda tmp: [*kitti(tmp), "--seed", "3"], r"--seed only chooses the train/val"),
    ("val fraction out of range", lambda tmp: [*kitti(tmp), "--val-fraction", "1.5"],
     r"--val-fraction must be between 0 and 1"),
    ("val fraction leaves no val", lambda tmp: [*kitti(tmp), "--val-fraction", "0.1"], r"leaves no validation image"),
    ("unknown format", lambda tmp: ["pascal", tmp, "--task", "x"], r"invalid choice: 'pascal'"),
]


def _map(tmp, text):
    path = tmp / "src" / "map.yaml"
    path.write_text(text)
    return path


def _run(args, capsys):
    try:
        code = main(["convert", *map(str, args)])
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name,build,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, name, build, pattern):
    args = build(tmp_path)
    if (tmp_path / "src").exists():
        before = tree_digest(tmp_path / "src")
    out = tmp_path / "new" / "deeper" / "out"  # its parents do not exist either
    code, _, err = _run([*args, "--out", out], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert not (tmp_path / "new").exists()  # no output, no build folder, no parent folders
    if (tmp_path / "src").exists():
        assert tree_digest(tmp_path / "src") == before


def test_an_existing_non_empty_out_is_never_touched(tmp_path, capsys):
    args = kitti(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = _run([*args, "--out", out], capsys)
    assert code == 2 and re.fullmatch(r"error: --out .*mine is not empty; refusing to overwrite it.*\n", err)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    code, _, err = _run([*args, "--out", tmp_path / "file"], capsys)
    assert code == 2 and "exists and is not a folder" in err and (tmp_path / "file").read_text() == "x"
    assert not leftovers(tmp_path)


def test_an_empty_out_folder_is_filled(tmp_path, capsys):
    args = kitti(tmp_path)
    (tmp_path / "empty").mkdir()
    assert _run([*args, "--out", tmp_path / "empty"], capsys)[0] == 0
    assert (tmp_path / "empty" / "labels" / "000000.txt").is_file()


def test_out_inside_the_source_is_refused(tmp_path, capsys):
    args = kitti(tmp_path)
    code, _, err = _run([*args, "--out", Path(args[1]) / "converted"], capsys)
    assert code == 2 and "is inside the source folder" in err
    assert not (Path(args[1]) / "converted").exists()


def test_a_killed_conversion_is_cleaned_up_by_the_next_one(tmp_path, capsys):
    args = kitti(tmp_path)
    stale = tmp_path / f".out.partial-999999999@{_host()}-0123abcd"  # no such process
    (stale / "images").mkdir(parents=True)
    assert _run([*args, "--out", tmp_path / "out"], capsys)[0] == 0
    assert not stale.exists() and not leftovers(tmp_path)


def test_a_killed_conversion_leaves_only_a_hidden_folder(tmp_path):
    """SIGKILL in the middle of writing: no output folder appears, only the hidden build folder."""
    src = make_kitti(tmp_path / "kitti", n=3)
    code = ("import os, signal\nimport src.data.convert.writing as w\nplace = w.place_image\n"
            "def killing(*a, **k):\n    place(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "w.place_image = killing\nimport src.data.convert.converter as c\nc.place_image = killing\n"
            "from src.cli.main import main\n"
            f"main(['convert', 'kitti', {str(src)!r}, '--task', 'vehicle_detection', '--out', "
            f"{str(tmp_path / 'out')!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                          timeout=120)
    assert proc.returncode == -9
    assert not (tmp_path / "out").exists() and len(leftovers(tmp_path)) == 1


def test_the_street_scene_command_refuses_with_one_line(tmp_path):
    from tests.helpers import run_cli

    src = make_kitti(tmp_path / "kitti", n=2)
    (src / "label_2" / "000001.txt").unlink()
    proc = run_cli("convert", "kitti", src, "--task", "vehicle_detection", "--out", tmp_path / "out")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: KITTI folder {src}: 1 image(s) without a label file (e.g. 000001); "
                                        "every image needs exactly one label file of the same name"]
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)
