"""mlu_training: all of mlu's machine learning, as plain Python (no Dagster imports).

Submodules are imported lazily by their users so that importing this package stays cheap;
torch and transformers are only imported by the model, method and router modules.
"""

from .threads import sleep_while_waiting

# Before anything of ours imports torch: its OpenMP runtime reads the wait policy once, at load
# (threads.py says why it matters: 8-14x under load).
sleep_while_waiting()
