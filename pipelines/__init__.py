"""Alias package so the user guide's `from pipelines.pipeline import StreetScenePipeline` works.

The code lives in src/pipelines; this adds no behaviour of its own.
"""
