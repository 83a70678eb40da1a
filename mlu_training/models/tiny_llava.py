"""The in-project default model: a tiny LLaVA built from small configs.

A byte-level BPE tokenizer trained with `tokenizers` on the benchmark's own text, a CLIP-style
vision tower, a Llama-style language model, joined in `LlavaForConditionalGeneration` with a
`LlavaProcessor`. Saved with `save_pretrained`, it loads back through the same auto classes as a
real LLaVA checkpoint, so every later step runs the same code on both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from .vlm import VisionLanguageModel, seed_everything

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
# USER: <image>\n{question} ASSISTANT: {answer}</s>  — the LLaVA-1.5 conversation format.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@dataclass(frozen=True)
class TinyLlavaConfig:
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 688
    vocab_size: int = 2000
    max_positions: int = 512

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_pictures(cls, image_size: int) -> "TinyLlavaConfig":
        """The recipe's model for a profile's renders: four patches a side, whatever their size."""
        return cls(image_size=image_size, patch_size=max(1, image_size // 4))


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sorted(texts), trainer)  # sorted: the merges do not depend on row order
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left",
    )


def build_tiny_llava(texts: Iterable[str], config: TinyLlavaConfig = TinyLlavaConfig(), seed: int = 0) -> VisionLanguageModel:
    """An untrained tiny LLaVA whose tokenizer knows the given texts."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    seed_everything(seed)
    tokenizer = train_tokenizer(texts, config.vocab_size)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": config.image_size}, crop_size={"height": config.image_size, "width": config.image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    patches = (config.image_size // config.patch_size) ** 2
    # "default" drops the CLS feature, so patches image tokens stand for each picture.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=config.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=config.vision_hidden, intermediate_size=2 * config.vision_hidden,
                              num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
                              image_size=config.image_size, patch_size=config.patch_size,
                              projection_dim=config.vision_hidden)
    vocab = len(tokenizer)
    text = LlamaConfig(vocab_size=vocab, hidden_size=config.text_hidden, intermediate_size=config.text_intermediate,
                       num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
                       num_key_value_heads=config.text_heads, max_position_embeddings=config.max_positions,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    llava = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                        image_seq_length=patches, vision_feature_layer=-1, vision_feature_select_strategy="default",
                        pad_token_id=tokenizer.pad_token_id)
    model = LlavaForConditionalGeneration(llava)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.do_sample = False
    return VisionLanguageModel(model.eval(), processor)
