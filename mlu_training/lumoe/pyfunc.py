"""An MLflow pyfunc for a registered expert: its adapter as an artifact, the base model by its
registry URI (model_config "base_model_uri"), so the registry holds each adapter once and the
base model once. Logged "from code": MLflow runs this file."""

import mlflow.artifacts
import mlflow.models
import mlflow.pyfunc
import pandas as pd


def base_checkpoint(base_model_uri: str) -> str:
    """The checkpoint folder of a registered base model (downloaded, or found locally)."""
    from mlu_training.paths import find_folder_with

    return str(find_folder_with(mlflow.artifacts.download_artifacts(base_model_uri), "config.json"))


class ExpertPyfunc(mlflow.pyfunc.PythonModel):
    """Input: `image` (a path) and `question`; output: the base model's answers with this expert on."""

    def load_context(self, context):
        from peft import PeftModel

        from mlu_training.models.vlm import VisionLanguageModel

        self.vlm = VisionLanguageModel.load(base_checkpoint(context.model_config["base_model_uri"]))
        self.vlm.model = PeftModel.from_pretrained(self.vlm.model, context.artifacts["adapter"]).eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[str]:
        from PIL import Image

        images = []
        for path in model_input["image"]:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        return self.vlm.generate(images, model_input["question"].tolist())


mlflow.models.set_model(ExpertPyfunc())
