"""mlu_assets: the Dagster definitions of mlu. Thin: every asset calls into mlu_training."""
