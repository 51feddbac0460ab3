"""`street-scene convert`: bring KITTI, BDD100K, COCO and Cityscapes data into street-scene's layouts.

One reader per format (kitti.py, bdd100k.py, coco.py, cityscapes.py) turns the source into samples with boxes in
pixels or label-id masks; the shared modules map the source classes onto a subtask's classes (mapping.py), write
YOLO labels (yolo.py) or class-id masks (masks.py), split train/val by file name (splitting.py) and build the
dataset in a hidden folder that is renamed into place at the end (writing.py). converter.py runs it top to bottom.
"""
