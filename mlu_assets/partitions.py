"""The partitions every domain shares, defined once.

- `base_models` (dynamic): `tiny`, a checkpoint folder's name, or `mlu-base-model-v<N>`; fed by
  the `new_base_models` sensor (and `mlu run`, for the default one).
- `lumoe_requests` (dynamic): the benchmark's tasks A-D, then every accepted request file; fed by
  the `unlearning_requests` sensor (and `mlu run`, for A-D).
- `method` (static): the registered unlearning methods.
"""

import dagster as dg

from mlu_training.benchmark import TASKS
from mlu_training.methods import METHODS

model_partitions = dg.DynamicPartitionsDefinition(name="base_models")
request_partitions = dg.DynamicPartitionsDefinition(name="lumoe_requests")
method_partitions = dg.StaticPartitionsDefinition(list(METHODS))
method_and_model = dg.MultiPartitionsDefinition({"method": method_partitions, "model": model_partitions})
model_and_request = dg.MultiPartitionsDefinition({"model": model_partitions, "request": request_partitions})


def missing_default_partitions(instance: dg.DagsterInstance, default_model: str) -> list[dg.AddDynamicPartitionsRequest]:
    """What must exist before anything runs: the default base model and the benchmark's own four
    requests. The sensors ask for these on their first tick; `mlu run` adds them itself."""
    wanted = {model_partitions: [default_model], request_partitions: list(TASKS)}
    requests = []
    for partitions, keys in wanted.items():
        have = set(instance.get_dynamic_partitions(partitions.name))
        new = [k for k in keys if k not in have]
        if new:
            requests.append(partitions.build_add_request(new))
    return requests
