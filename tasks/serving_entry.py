"""MLflow "models from code" entry: MLflow executes this file when it loads a transferrec model.

Not imported by transferrec itself (it declares the model object, which is its only purpose).
"""

from mlflow.models import set_model

from tasks.serving import FactorRecommender

set_model(FactorRecommender())
