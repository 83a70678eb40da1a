"""Profiles: how much of the benchmark a run uses. `mini` runs end to end in minutes on 2 CPU
cores; `research` has ten forget and ten retain entities per task side, for intervals narrow
enough to rank methods (README: its command, with seeds and a second order); `full` is the whole
benchmark (about 45 minutes on 2 CPU cores with the in-project model, measured); `tiny` is for
the test-suite."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    entities_per_side: int | None  # forget (and retain) entities kept per task; None = all
    max_train_images_per_entity: int | None  # distinct images per entity in train; None = all
    image_size: int  # side of the synthetic renders, in pixels
    seed: int = 0
    # The tiny base model's fine-tuning steps (batch 32): about ten passes over what it is taught
    # (mini: 519 profile pairs, 100 of known distractors, 316 declines: 300 steps; research: 2,719,
    # about 200 and 108: 1,000 steps). `full` has 121 pairs of each entity where mini has 32: five
    # passes show each entity about twice as many examples as mini's ten.
    base_model_steps: int = 300

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "tiny": Profile("tiny", entities_per_side=1, max_train_images_per_entity=3, image_size=32),
    "mini": Profile("mini", entities_per_side=2, max_train_images_per_entity=6, image_size=32),
    "research": Profile("research", entities_per_side=10, max_train_images_per_entity=6, image_size=32,
                        base_model_steps=1000),
    "full": Profile("full", entities_per_side=None, max_train_images_per_entity=None, image_size=224,
                    base_model_steps=2500),  # 15,414 pairs, no entity outside it: ~5 passes
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (MLU_PROFILE); choose one of {', '.join(PROFILES)}") from None
