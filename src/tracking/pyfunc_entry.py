"""What MLflow runs to load a street-scene model version (MLflow's "models from code"; nothing is unpickled).

MLflow copies this file into the model and executes it on `mlflow.pyfunc.load_model`; street-scene never
imports it. The model's `code/src` folder (the street-scene code that logged it) is put on sys.path first.
"""

import mlflow

from src.tracking.pyfunc_model import StreetSceneModel

mlflow.models.set_model(StreetSceneModel())
