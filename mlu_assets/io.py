"""Where asset values live: tables as Parquet, small records as JSON, under MLU_DATA_DIR/tables.

Files are written to a temporary name and renamed, so a failed run never leaves half a table
(and a reader never sees one). Models and images are files of their own; assets return paths.
"""



import json
from pathlib import Path

import dagster as dg

from mlu_training.paths import atomic_write_bytes


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
            atomic_write_bytes(stem.with_suffix(".json"), json.dumps(obj, indent=1, ensure_ascii=False).encode())

    def load_input(self, context: dg.InputContext):
        import pandas as pd

        stem = self._stem(context)
        if stem.with_suffix(".parquet").is_file():
            return pd.read_parquet(stem.with_suffix(".parquet"))
        if stem.with_suffix(".json").is_file():
            return json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        raise FileNotFoundError(f"{context.asset_key.to_user_string()} has no stored value under {stem}; materialize it first")
