"""Run lifecycles shared by every task, and the StreetScenePipeline API."""
