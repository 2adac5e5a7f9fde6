"""The file MLflow runs to build the served model (a model from code: nothing is unpickled).

serving.log_served_model logs it; MLflow executes it when the model loads, with this
package, shipped beside it, on the import path.
"""

import mlflow

from mnistcnn.serving.classifier import DigitClassifier

mlflow.models.set_model(DigitClassifier())
