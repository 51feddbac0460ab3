"""Object detection on ultralytics YOLO: offline set-up, plain-argument training and evaluation engine."""
