"""What harder pictures cost the tiny base model: for each variant, the share of the 127 entities
that a nearest centroid in pixel space names on unseen renders (6 renders per entity make the
centroids, 3 others are asked), and the base model taught on the run's pictures drawn that way, as
the `base_model` asset teaches it: the evaluation items its knowledge filter keeps and its
calibration (declines of never-seen entities, goal >= 0.9; of known ones, goal <= 0.05).

A variant is a renderer (shapes-v1, the benchmark's, or one of data.render.VARIATIONS), a number
of renders of each taught picture (`views`: the pictures a model would have seen of an entity
before the benchmark; the extra ones are seeded renders of the same image path, for the profile's
train pairs and the declined entities alike, so neither side outweighs the other; the four known
distractors' pairs keep one picture each, and the tokenizer is trained on the texts as taught,
repeats included, as the README's numbers were measured) and the fine-tuning's steps. The
README's table ("The renderer's variation") was measured with it. Renders only: a run on
photographs (MLU_IMAGES_DIR) has nothing to redraw.

Usage: .venv/bin/python scripts/renderer_tradeoff.py [--data-dir D] [--variants shapes-v1,posed]
                                                     [--jobs N] [--smoke]"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from _inputs import bench_arguments, load_run_outputs  # noqa: E402


RENDER_SEED = re.compile(r"-seed(\d+)/")  # the renders' folder: crawls.synthetic_dir


@dataclass(frozen=True)
class Variant:
    renderer: str = "shapes-v1"  # or a data.render.VARIATIONS name
    views: int = 1
    steps: int | None = None  # None: the profile's base_model_steps
    tiny: dict = field(default_factory=dict)  # TinyLlavaConfig fields changed


VARIANTS = {
    "shapes-v1": Variant(),
    "shapes-v1-views8": Variant(views=8),
    "recoloured": Variant("recoloured"),
    "recoloured-views4": Variant("recoloured", views=4),
    "recoloured-views8": Variant("recoloured", views=8),
    "recoloured-moved-views4": Variant("recoloured-moved", views=4),
    "recoloured-moved-views8-1000": Variant("recoloured-moved", views=8, steps=1000),
    "posed": Variant("posed"),
    "posed-1000": Variant("posed", steps=1000),
    "posed-views8-1500": Variant("posed", views=8, steps=1500),
    "posed-vision4": Variant("posed", tiny={"vision_layers": 4}),
    "posed-patch4": Variant("posed", tiny={"patch_size": 4}),
}


def render(variant: Variant, image: str, size: int, seed: int = 0):
    from mlu_training.data.records import IMAGE_PATH
    from mlu_training.data.render import VARIATIONS, render_image

    m = IMAGE_PATH.match(image)  # a view's `#view<k>` stays in the file name part
    return render_image(m["cls"], m["entity"], image, size=size, seed=seed, variation=VARIATIONS.get(variant.renderer))


def pixel_centroid_names(variant: Variant, entities: list[tuple[str, str]]) -> float:
    """The share of unseen renders whose nearest pixel centroid is their own entity's."""
    from mlu_training.data.render import VARIATIONS, nearest_centroids

    nearest = nearest_centroids(entities, VARIATIONS.get(variant.renderer))
    return sum(k == j for k, j in nearest) / len(nearest)


def with_views(rows, views: int):
    """`rows` and views-1 copies whose image is a further render of the same path (`path#view<k>`)."""
    import pandas as pd

    return pd.concat([rows, *(rows.assign(image=rows["image"] + f"#view{k}") for k in range(1, views))],
                     ignore_index=True)


def measure(name: str, variant: Variant, data_dir: Path | None, model: str, smoke: bool, jobs: int, work: Path) -> dict:
    import pandas as pd

    from mlu_training.data.records import IMAGE_PATH
    from mlu_training.data.render import png_bytes
    from mlu_training.data.splits import data_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.judge import LocalJudge
    from mlu_training.models.base_model import MANIFEST, build_base_model
    from mlu_training.models.declining import calibration, declines_for
    from mlu_training.models.knowledge import filter_known
    from mlu_training.models.sft import SFTConfig
    from mlu_training.models.tiny_llava import TinyLlavaConfig
    from mlu_training.models.vlm import VisionLanguageModel
    from mlu_training.paths import default_data_dir
    from mlu_training.threads import use_threads

    use_threads(jobs)
    splits, crawls, run_base, _ = load_run_outputs(data_dir, model)
    qa = pd.read_parquet(Path(data_dir or default_data_dir()) / "tables" / "validated_qa_pairs.parquet")
    if (crawls["source"] != "synthetic").any():
        sys.exit("renderer_tradeoff: the run's pictures are not all renders (MLU_IMAGES_DIR): nothing to redraw")
    manifest = Path(run_base.path) / MANIFEST
    if not manifest.is_file():
        sys.exit(f"renderer_tradeoff: base model {model!r} is not the in-project tiny model (no {MANIFEST})")
    recipe = json.loads(manifest.read_text())  # the run's: every setting not varied here
    render_seed = int(RENDER_SEED.search(str(crawls["file"].iloc[0]))[1])
    tiny = replace(TinyLlavaConfig(**recipe["tiny"]), **variant.tiny)
    sft = SFTConfig(**recipe["sft"])
    sft = replace(sft, steps=2, batch_size=4) if smoke else replace(sft, steps=variant.steps or sft.steps)
    size = tiny.image_size
    pool = declines_for(qa, splits, sft.seed)
    pool = replace(pool, taught=with_views(pool.taught, variant.views))
    train = splits[splits["split"] == "train"]
    splits = pd.concat([splits[splits["split"] != "train"], with_views(train, variant.views)], ignore_index=True)
    pictures = sorted(set(crawls["image"]) | set(splits["image"]) | set(pool.taught["image"]))
    files, shas = {}, {}
    for image in pictures:
        payload = png_bytes(render(variant, image, size, render_seed))
        files[image] = work / name / "images" / hashlib.sha256(image.encode()).hexdigest()[:24]
        files[image].parent.mkdir(parents=True, exist_ok=True)
        files[image].write_bytes(payload)
        shas[image] = hashlib.sha256(payload).hexdigest()
    crawls = pd.DataFrame({"image": pictures, "file": [str(files[i]) for i in pictures],
                           "sha256": [shas[i] for i in pictures]})
    load = image_loader(crawls)
    taught = build_base_model(splits, load, data_digest(splits, crawls), work / name / "models", tiny, sft, declines=pool)
    vlm = VisionLanguageModel.load(taught.path)
    evaluation = splits[splits["split"] == "eval"]
    unseen = pool.unseen[pool.unseen["variant"] == 0]
    if smoke:
        evaluation, unseen = evaluation.groupby(["task", "role"]).head(2), unseen.head(4)
    known = filter_known(vlm, evaluation, load, LocalJudge.from_qa(qa), 2, 32, 96)
    entities = sorted({(m["cls"], m["entity"]) for m in map(IMAGE_PATH.match, crawls["image"]) if m})
    if smoke:
        entities = entities[:6]
    return {"variant": name, **asdict(variant), "steps": sft.steps,
            "pixel_centroid_names": pixel_centroid_names(variant, entities), "entities": len(entities),
            "kept": len(known.kept), "items": len(evaluation), "final_loss": taught.final_loss,
            **calibration(vlm, evaluation, unseen, load)}


def main() -> None:
    ap = bench_arguments(__doc__)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--jobs", type=int, default=1, help="variants measured at once, sharing the cores (a GPU holds many)")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"renderer_tradeoff: no variant {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(measure, n, VARIANTS[n], args.data_dir, args.model, args.smoke, args.jobs, Path(tmp))
                for n in names]
        rows = [job.result() for job in jobs]
    print("variant | pixels name the entity | items kept | declines never-seen | declines known")
    for r in rows:
        print(f"{r['variant']} | {r['pixel_centroid_names']:.2f} | {r['kept']}/{r['items']} | "
              f"{r['refusal_unseen']:.3f} | {r['refusal_known']:.3f}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
