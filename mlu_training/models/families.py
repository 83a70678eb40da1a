"""Every model family mlu knows, in one table: `config.model_type` -> where LoRA goes (the
language model's attention and MLP, the projector, the vision tower) and what else differs.

A new family is one entry of `FAMILIES`. The regexes are matched (fullmatch, as peft does) against
module names of transformers 5's `...ForConditionalGeneration`; a projector that is a bare weight
rather than a Linear (Gemma 3) is named in `projector_parameters` and wrapped with peft's
`target_parameters`. What a family cannot do raises `FamilyFeatureError`, naming the family and the
feature, instead of a stack trace from deep inside transformers or peft.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

PARTS = ("language", "projector", "vision_tower")

# The LLaVA family's (and the in-project tiny LLaVA's) targets: kept as they always were, so the
# default model's LoRA wraps the same modules and gives the same numbers.
_LLAVA_LANGUAGE = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_LLAVA_PROJECTOR = r".*(multi_modal_projector\.linear_[12]|visual\.merger\.mlp\.[0-9]+)"
_LLAVA_VISION = r".*(vision_tower|visual\.blocks).*\.(q_proj|k_proj|v_proj|out_proj|qkv|proj|fc1|fc2)"


class FamilyFeatureError(NotImplementedError):
    """A family that cannot do something mlu needs: says which family, which feature, and why."""

    def __init__(self, family: str, feature: str, why: str):
        self.family, self.feature, self.why = family, feature, why
        super().__init__(f"model family {family!r} cannot {feature}: {why.strip()}")


@dataclass(frozen=True)
class Family:
    model_type: str  # config.model_type
    name: str  # what people call it
    language: str  # regex of the language model's attention and MLP Linear layers
    projector: str  # regex of the projector's Linear layers ("" when it has none)
    vision_tower: str  # regex of the vision tower's attention and MLP Linear layers
    projector_parameters: tuple[str, ...] = ()  # bare projector weights, wrapped by peft's target_parameters
    nested_images: bool = False  # the processor wants one list of images per prompt
    lean_greedy: bool = False  # plain 1-D positions over a KV cache: VisionLanguageModel's own greedy loop
    video_free_processor: bool = False  # its processor demands a video processor, which needs torchvision
    packs_sequences: bool = False  # VisionLanguageModel.packed_training_batch serves it
    unsupported: Mapping[str, str] = field(default_factory=dict)  # feature -> why it cannot

    def pattern(self, part: str) -> str:
        return {"language": self.language, "projector": self.projector, "vision_tower": self.vision_tower}[part]

    def part_of(self, module_name: str) -> str | None:
        """Which part (language, projector, vision_tower) a module name belongs to."""
        for part in PARTS:
            pattern = self.pattern(part)
            if pattern and re.fullmatch(pattern, module_name):
                return part
        if any(module_name.endswith(p) or module_name.endswith(p.rsplit(".", 1)[0]) for p in self.projector_parameters):
            return "projector"
        return None

    def require(self, feature: str) -> None:
        if feature in self.unsupported:
            raise FamilyFeatureError(self.model_type, feature, self.unsupported[feature])


def _family(model_type: str, name: str, language: str, projector: str, vision_tower: str, **kw) -> Family:
    return Family(model_type, name, language, projector, vision_tower, **kw)


_ATTN_MLP = r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_IDEFICS = dict(
    language=rf".*model\.text_model\.layers\.[0-9]+\.(self_attn|mlp)\.{_ATTN_MLP}",
    projector=r".*model\.connector\.modality_projection\.proj",
    vision_tower=r".*model\.vision_model\.encoder\.layers\.[0-9]+\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",
)
_QWEN_LANGUAGE = rf".*model\.language_model\.layers\.[0-9]+\.(self_attn|mlp)\.{_ATTN_MLP}"
_QWEN_PROJECTOR = r".*model\.visual\.merger\.mlp\.(0|2)"  # mlp.1 is the activation

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    _family("llava", "LLaVA-1.5", _LLAVA_LANGUAGE, _LLAVA_PROJECTOR, _LLAVA_VISION, lean_greedy=True,
            packs_sequences=True),
    _family("llava_next", "LLaVA-1.6 (LLaVA-NeXT)", _LLAVA_LANGUAGE, _LLAVA_PROJECTOR, _LLAVA_VISION, lean_greedy=True),
    _family("qwen2_vl", "Qwen2-VL", _QWEN_LANGUAGE, _QWEN_PROJECTOR,
            r".*model\.visual\.blocks\.[0-9]+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))", video_free_processor=True),
    _family("qwen2_5_vl", "Qwen2.5-VL", _QWEN_LANGUAGE, _QWEN_PROJECTOR,
            r".*model\.visual\.blocks\.[0-9]+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))",
            video_free_processor=True),
    _family("idefics3", "Idefics3", **_IDEFICS),
    _family("smolvlm", "SmolVLM", **_IDEFICS),
    _family("gemma3", "Gemma 3", rf".*model\.language_model\.layers\.[0-9]+\.(self_attn|mlp)\.{_ATTN_MLP}", "",
            r".*model\.vision_tower\.encoder\.layers\.[0-9]+\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",
            projector_parameters=("multi_modal_projector.mm_input_projection_weight",), nested_images=True),
    _family("mllama", "Llama-3.2-Vision (Mllama)",
            rf".*model\.language_model\.layers\.[0-9]+\.(self_attn|cross_attn|mlp)\.{_ATTN_MLP}",
            r".*model\.multi_modal_projector",
            r".*model\.vision_model\.(transformer|global_transformer)\.layers\.[0-9]+\.(self_attn|mlp)\."
            r"(q_proj|k_proj|v_proj|o_proj|fc1|fc2)", nested_images=True),
)}


PROCESSOR_CLASSES = {
    "llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor", "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor", "idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor",
    "gemma3": "Gemma3Processor", "mllama": "MllamaProcessor",
}


def get_family(model_type: str) -> Family:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise FamilyFeatureError(model_type, "be unlearned by mlu",
                                 f"no entry in mlu_training/models/families.py::FAMILIES (known: {', '.join(FAMILIES)})") \
            from None


def family_of(model) -> Family:
    """The family of a transformers model (or a peft model around one)."""
    config = getattr(model, "config", None)
    return get_family(getattr(config, "model_type", type(model).__name__))


def processor_class(model_type: str):
    """The family's processor class. For those that demand a video processor (Qwen-VL: its own
    needs torchvision, and transformers 5 rejects None), a subclass with the same name that
    accepts none, so images-only prompts work without torchvision; saved, it loads as the real one."""
    import transformers

    family = get_family(model_type)
    base = getattr(transformers, PROCESSOR_CLASSES[model_type])
    return _without_video(base) if family.video_free_processor else base


_VIDEO_FREE: dict[type, type] = {}


def _without_video(base: type) -> type:
    """`base` without its video processor: transformers 5 checks every sub-processor named in
    `__init__` (None included) and Qwen-VL's video processor needs torchvision. Images work as
    with the real class; a video raises AttributeError."""
    if base not in _VIDEO_FREE:
        def get_attributes(cls):
            return [a for a in base.get_attributes.__func__(cls) if a != "video_processor"]

        _VIDEO_FREE[base] = type(base.__name__, (base,), {"get_attributes": classmethod(get_attributes),
                                                          "__module__": base.__module__})
    return _VIDEO_FREE[base]


def load_processor(path, model_type: str, trust_remote_code: bool = False):
    """The checkpoint's processor, through AutoProcessor; for a video-free family whose video
    processor cannot be made here (no torchvision), assembled from its tokenizer, image processor
    and chat template instead. Anything else that fails names the family."""
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    family = FAMILIES.get(model_type)
    try:
        return AutoProcessor.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (ImportError, AttributeError, TypeError, ValueError, OSError) as why:
        if family is None or not family.video_free_processor:
            raise FamilyFeatureError(model_type, "load its processor", f"{type(why).__name__}: {why}") from why
    import json
    from pathlib import Path

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    images = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    template = None
    for name in ("chat_template.jinja", "chat_template.json"):
        file = Path(path) / name
        if file.is_file():
            text = file.read_text()
            template = json.loads(text)["chat_template"] if name.endswith(".json") else text
            break
    config = json.loads((Path(path) / "processor_config.json").read_text()) if (Path(path) / "processor_config.json").is_file() else {}
    base = getattr(transformers, config.get("processor_class", ""), None) or processor_class(model_type)
    return _without_video(base)(image_processor=images, tokenizer=tokenizer, chat_template=template)
