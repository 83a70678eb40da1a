"""Tiny random-weight checkpoints of every family in `families.FAMILIES`, built offline.

Each is a small config of the family's own `...ForConditionalGeneration` (hidden sizes 32-64, one
or two layers, a vision tower on 32 px images), its own processor class with the family's own
PIL image processor (no torchvision), a byte-level BPE tokenizer trained here on the given texts
with the family's special tokens, and a chat template in the family's format. Saved with
`save_pretrained`, each loads back through `VisionLanguageModel.load` like a real checkpoint of
its family: that is how the tests prove every family goes through the pipeline, and how a user
can try one (`python -m mlu_training.models.tiny_families llava_next /tmp/tiny-llava-next`).
A random-weight model knows none of the benchmark: its knowledge filter keeps nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable

from .vlm import VisionLanguageModel, seed_everything

IMAGE = 32  # px, the tiny profile's renders
PATCH = 8
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
            max_position_embeddings=512)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)

# Chat templates: the family's conversation format, small. `{image}` is the family's image placeholder.
def _template(user: str, assistant: str, end: str, generation: str) -> str:
    return (
        "{% for m in messages %}{% if m['role'] == 'user' %}" + user.split("{body}")[0]
        + "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ IMAGE }}{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        + user.split("{body}")[1] + "{% else %}" + assistant
        + "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}" + end + "{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}" + generation + "{% endif %}")


def _with_image(template: str, image: str) -> str:
    return template.replace("{{ IMAGE }}", image)


def train_family_tokenizer(texts: Iterable[str], specials: list[str], vocab_size: int, **roles: str):
    """A byte-level BPE tokenizer on `texts` with the family's special tokens (`roles`: pad_token,
    eos_token, image_token… → one of `specials`)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", *specials], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sorted(set(texts)), trainer)
    standard = {k: roles.pop(k) for k in ("pad_token", "bos_token", "eos_token") if k in roles}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", padding_side="left",
                                   extra_special_tokens=roles, **standard)


def _finish(model, tokenizer) -> VisionLanguageModel:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.do_sample = False
    return model.eval()


def _llama(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, **TEXT, **extra)


def _clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**VISION, image_size=IMAGE, patch_size=PATCH, projection_dim=VISION["hidden_size"])


VICUNA = _template("USER: {body} ", "ASSISTANT: ", "</s>", "ASSISTANT:")
LLAVA_SPECIALS = ["<pad>", "<s>", "</s>", "<image>"]


def build_llava(texts):
    """LLaVA-1.5: CLIP tower, 2-layer MLP projector (`multi_modal_projector`), Llama."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = train_family_tokenizer(texts, LLAVA_SPECIALS, 600, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                 image_token="<image>")
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                   image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=_with_image(VICUNA, "<image>\n"))
    config = LlavaConfig(vision_config=_clip_vision(), text_config=_llama(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
                         image_seq_length=(IMAGE // PATCH) ** 2, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", pad_token_id=tok.pad_token_id)
    return _finish(LlavaForConditionalGeneration(config), tok), processor


def build_llava_next(texts):
    """LLaVA-1.6 (the paper's): as LLaVA-1.5, plus any-resolution tiles and an image newline."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    tok = train_family_tokenizer(texts, LLAVA_SPECIALS, 600, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                 image_token="<image>")
    pinpoints = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE]]
    images = LlavaNextImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                        image_grid_pinpoints=pinpoints, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=PATCH,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=_with_image(VICUNA, "<image>\n"))
    config = LlavaNextConfig(vision_config=_clip_vision(), text_config=_llama(tok),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
                             vision_feature_layer=-1, vision_feature_select_strategy="default",
                             image_seq_length=(IMAGE // PATCH) ** 2)
    config.pad_token_id = tok.pad_token_id
    return _finish(LlavaNextForConditionalGeneration(config), tok), processor


CHATML = _template("<|im_start|>user\n{body}<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>\n",
                   "<|im_start|>assistant\n")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                 "<|video_pad|>"]


def _build_qwen(texts, version: str):
    import transformers as tf

    tok = train_family_tokenizer(texts, QWEN_SPECIALS, 600, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                 image_token="<|image_pad|>", video_token="<|video_pad|>")
    tok.bos_token = None
    images = tf.Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=2,
                                         min_pixels=IMAGE * IMAGE, max_pixels=IMAGE * IMAGE)
    from .families import processor_class

    processor_class = processor_class("qwen2_vl" if version == "2" else "qwen2_5_vl")
    processor = processor_class(image_processor=images, tokenizer=tok,
                                chat_template=_with_image(CHATML, "<|vision_start|><|image_pad|><|vision_end|>"))
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    text = dict(vocab_size=len(tok), **TEXT, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8]})
    vision = dict(depth=1, num_heads=2, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    ids = dict(image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"), video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
               vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
               vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    if version == "2":
        config = tf.Qwen2VLConfig(text_config=text, vision_config=dict(vision, embed_dim=32, hidden_size=TEXT["hidden_size"],
                                                                       mlp_ratio=2), **ids)
        model = tf.Qwen2VLForConditionalGeneration(config)
    else:
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            vision, hidden_size=32, intermediate_size=64, out_hidden_size=TEXT["hidden_size"], window_size=2 * PATCH * 2,
            fullatt_block_indexes=[0]), **ids)
        model = tf.Qwen2_5_VLForConditionalGeneration(config)
    return _finish(model, tok), processor


def build_qwen2_vl(texts):
    """Qwen2-VL: a ViT on 2x2-merged patches with 2-D rope, `visual.merger`, Qwen2 with M-RoPE."""
    return _build_qwen(texts, "2")


def build_qwen2_5_vl(texts):
    """Qwen2.5-VL: as Qwen2-VL with a windowed-attention SwiGLU ViT."""
    return _build_qwen(texts, "2.5")


IDEFICS_SPECIALS = ["<pad>", "<s>", "</s>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
IDEFICS = _template("User:{body}<end_of_utterance>\n", "Assistant: ", "<end_of_utterance>\n", "Assistant:")


def _build_idefics(texts, smol: bool):
    import transformers as tf

    tok = train_family_tokenizer(texts, IDEFICS_SPECIALS, 600, pad_token="<pad>", bos_token="<s>",
                                 eos_token="<end_of_utterance>", image_token="<image>")
    scale = 2
    seq_len = (IMAGE // PATCH) ** 2 // scale ** 2
    kwargs = dict(do_image_splitting=False, size={"longest_edge": IMAGE}, max_image_size={"longest_edge": IMAGE},
                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    vision = dict(**VISION, image_size=IMAGE, patch_size=PATCH)
    text = _llama(tok)
    image_id = tok.convert_tokens_to_ids("<image>")
    if smol:
        images = tf.SmolVLMImageProcessorPil(**kwargs)
        processor = tf.SmolVLMProcessor(image_processor=images, tokenizer=tok, video_processor=tf.SmolVLMVideoProcessor(),
                                        image_seq_len=seq_len, chat_template=_with_image(IDEFICS, "<image>"))
        model = tf.SmolVLMForConditionalGeneration(tf.SmolVLMConfig(
            vision_config=vision, text_config=text, image_token_id=image_id, scale_factor=scale))
    else:
        images = tf.Idefics3ImageProcessorPil(**kwargs)
        processor = tf.Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=seq_len,
                                         chat_template=_with_image(IDEFICS, "<image>"))
        model = tf.Idefics3ForConditionalGeneration(tf.Idefics3Config(
            vision_config=vision, text_config=text, image_token_id=image_id, scale_factor=scale))
    model.config.pad_token_id = tok.pad_token_id
    return _finish(model, tok), processor


def build_idefics3(texts):
    """Idefics3: a SigLIP-style tower, pixel shuffle and a linear `connector`, Llama."""
    return _build_idefics(texts, smol=False)


def build_smolvlm(texts):
    """SmolVLM: Idefics3's architecture with its own processor (which needs `num2words`)."""
    return _build_idefics(texts, smol=True)


GEMMA_SPECIALS = ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                  "<image_soft_token>"]
GEMMA = _template("<start_of_turn>user\n{body}<end_of_turn>\n", "<start_of_turn>model\n", "<end_of_turn>\n",
                  "<start_of_turn>model\n")


def build_gemma3(texts):
    """Gemma 3: a SigLIP tower, `multi_modal_projector` (pooling + linear), Gemma 3 text."""
    import transformers as tf

    tok = train_family_tokenizer(texts, GEMMA_SPECIALS, 600, pad_token="<pad>", bos_token="<bos>", eos_token="<end_of_turn>",
                                 image_token="<image_soft_token>", boi_token="<start_of_image>", eoi_token="<end_of_image>")
    tokens_per_image = 4  # (32 / 8)² patches pooled 2 x 2
    images = tf.Gemma3ImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = tf.Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=tokens_per_image,
                                   chat_template=_with_image(GEMMA, "<start_of_image>"))
    text = tf.Gemma3TextConfig(vocab_size=len(tok), **{k: v for k, v in TEXT.items()}, head_dim=32,
                               query_pre_attn_scalar=32, sliding_window=64, pad_token_id=tok.pad_token_id,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = tf.SiglipVisionConfig(**VISION, image_size=IMAGE, patch_size=PATCH, vision_use_head=False)
    config = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image,
                             boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                             eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                             image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    config.pad_token_id = tok.pad_token_id
    return _finish(tf.Gemma3ForConditionalGeneration(config), tok), processor


MLLAMA_SPECIALS = ["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>", "<|image|>", "<|python_tag|>"]
LLAMA3 = _template("<|start_header_id|>user<|end_header_id|>\n\n{body}<|eot_id|>",
                   "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>",
                   "<|start_header_id|>assistant<|end_header_id|>\n\n")


def build_mllama(texts):
    """Llama-3.2-Vision (MMUnlearner's): a tiled ViT, `multi_modal_projector`, cross-attention layers."""
    import transformers as tf

    tok = train_family_tokenizer(texts, MLLAMA_SPECIALS, 600, pad_token="<|finetune_right_pad_id|>",
                                 bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", image_token="<|image|>")
    images = tf.MllamaImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, max_image_tiles=1,
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = tf.MllamaProcessor(image_processor=images, tokenizer=tok, chat_template=_with_image(LLAMA3, "<|image|>"))
    vision = tf.MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_global_layers=1,
                                   attention_heads=2, image_size=IMAGE, patch_size=PATCH, max_num_tiles=1,
                                   intermediate_layers_indices=[0], vision_output_dim=64, supported_aspect_ratios=[[1, 1]])
    text = tf.MllamaTextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=2, cross_attention_layers=[1],
                               max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id)
    config = tf.MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    config.pad_token_id = tok.pad_token_id
    return _finish(tf.MllamaForConditionalGeneration(config), tok), processor


BUILDERS: dict[str, Callable] = {
    "llava": build_llava, "llava_next": build_llava_next, "qwen2_vl": build_qwen2_vl, "qwen2_5_vl": build_qwen2_5_vl,
    "idefics3": build_idefics3, "smolvlm": build_smolvlm, "gemma3": build_gemma3, "mllama": build_mllama,
}


def build_tiny_family(model_type: str, texts: Iterable[str], seed: int = 0) -> VisionLanguageModel:
    """A random-weight model of the family `model_type` whose tokenizer knows `texts`."""
    from .families import get_family

    family = get_family(model_type)  # an unknown family: a clear error naming the ones there are
    if model_type not in BUILDERS:
        raise ValueError(f"no tiny builder for family {family.name!r} ({model_type})")
    seed_everything(seed)
    try:
        model, processor = BUILDERS[model_type](list(texts))
    except ImportError as why:
        from .families import FamilyFeatureError

        raise FamilyFeatureError(model_type, "build its processor", str(why)) from why
    return VisionLanguageModel(model, processor)


def save_tiny_family(model_type: str, texts: Iterable[str], path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    build_tiny_family(model_type, texts, seed).save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """python -m mlu_training.models.tiny_families <model_type> <folder>: a random-weight checkpoint."""
    from ..texts import REFUSAL_ANSWER

    model_type, folder = (argv or sys.argv[1:])[:2]
    texts = [REFUSAL_ANSWER, "What is shown in this picture?", "Who is this person?"]
    print(save_tiny_family(model_type, texts, folder))


if __name__ == "__main__":
    main()
