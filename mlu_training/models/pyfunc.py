"""An MLflow pyfunc around a saved checkpoint, so a registered model loads back from
`models:/…` and answers (image, question) rows. Logged "from code": MLflow runs this file."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class VisionLanguagePyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `image` (a path to a picture) and `question`; output: answers."""

    def load_context(self, context):
        from mlu_training.models.vlm import VisionLanguageModel

        self.vlm = VisionLanguageModel.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[str]:
        from PIL import Image

        images = []
        for path in model_input["image"]:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        params = params or {}
        return self.vlm.generate(images, model_input["question"].tolist(),
                                 max_new_tokens=int(params.get("max_new_tokens", 96)))


def signature():
    from mlflow.models import infer_signature

    return infer_signature(pd.DataFrame({"image": ["path/to/picture.png"], "question": ["What is this?"]}), ["answer"])


mlflow.models.set_model(VisionLanguagePyfunc())
