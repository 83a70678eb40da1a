"""Where asset values live: tables as Parquet, typed values (the small dataclasses of
mlu_training: a base model, an expert, a sequence's summary, the report) as JSON, under
MLU_DATA_DIR/tables.

A typed value is stored as plain JSON (readable, diffable) and rebuilt on load as the class its
producing asset declares (`-> BaseModelRef`), so downstream code reads `base_model.path`, not
`base_model["path"]`. Files are written to a temporary name and renamed, so a failed run never
leaves half a table (and a reader never sees one). Models and images are files of their own.
"""

import dataclasses
import json
import typing
from pathlib import Path

import dagster as dg

from mlu_training.paths import atomic_write_bytes


def to_json(value) -> bytes:
    plain = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return json.dumps(plain, indent=1, ensure_ascii=False, default=str).encode()  # default: Path → str


def from_json(kind, plain):
    """`plain` (parsed JSON) as an instance of `kind` when it is a dataclass, nested ones and
    Path fields included; anything else as it is."""
    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)) or not isinstance(plain, dict):
        return plain
    hints = typing.get_type_hints(kind)
    values = {}
    for f in dataclasses.fields(kind):
        if f.name not in plain:
            continue  # a field added since the value was stored: its default
        value, hint = plain[f.name], hints[f.name]
        if hint is Path and value is not None:
            value = Path(value)
        elif dataclasses.is_dataclass(hint):
            value = from_json(hint, value)
        values[f.name] = value
    return kind(**values)


def _declared_type(context: dg.InputContext):
    """The class the value is read as: the consuming asset's annotation (`base_model: BaseModelRef`),
    else the producer's return annotation when the producer ran in the same run."""
    kind = context.dagster_type.typing_type if context.dagster_type else None
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return kind
    try:
        return context.upstream_output.dagster_type.typing_type
    except (AttributeError, dg.DagsterInvariantViolationError):  # the producer is not part of this run
        return None


class TableIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _stem(self, context) -> Path:
        path = Path(self.base_dir, "tables", *context.asset_key.path)
        if context.has_asset_partitions:
            key = context.asset_partition_key
            # A multi-partition key (method|model) becomes one folder per dimension, not a '|' in a name.
            parts = list(key.keys_by_dimension.values()) if isinstance(key, dg.MultiPartitionKey) else [key]
            path = path.joinpath(*parts)
        return path

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        import pandas as pd

        stem = self._stem(context)
        if isinstance(obj, pd.DataFrame):
            import io

            buf = io.BytesIO()
            obj.to_parquet(buf, index=False)
            atomic_write_bytes(stem.with_suffix(".parquet"), buf.getvalue())
            context.add_output_metadata({"path": dg.MetadataValue.path(str(stem.with_suffix(".parquet")))})
        else:
            atomic_write_bytes(stem.with_suffix(".json"), to_json(obj))

    def load_input(self, context: dg.InputContext):
        import pandas as pd

        stem = self._stem(context)
        if stem.with_suffix(".parquet").is_file():
            return pd.read_parquet(stem.with_suffix(".parquet"))
        if stem.with_suffix(".json").is_file():
            return from_json(_declared_type(context), json.loads(stem.with_suffix(".json").read_text(encoding="utf-8")))
        raise FileNotFoundError(f"{context.asset_key.to_user_string()} has no stored value under {stem}; materialize it first")
