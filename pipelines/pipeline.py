"""`from pipelines.pipeline import StreetScenePipeline` (user guide) is src.pipelines.pipeline's class."""

from src.pipelines.pipeline import StreetScenePipeline

__all__ = ["StreetScenePipeline"]
