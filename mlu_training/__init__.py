"""mlu_training: all of mlu's machine learning, as plain Python (no Dagster imports).

Submodules are imported lazily by their users so that importing this package stays cheap;
torch and transformers are only imported by the model, method and router modules.
"""
