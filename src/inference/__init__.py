"""Using a trained model: load it (checkpoint, run id or exported ONNX), predict, export with provenance.

`predictor.load_predictor(ref)` is the one entry point for in-memory prediction; `predict.predict_source` runs it
over files and writes an output folder; `export.export_model` writes ONNX / TorchScript / ultralytics files.
"""
