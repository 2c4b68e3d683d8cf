"""Tiny random students built offline from configs: a text LM, an Idefics3 VLM and a LLaVA VLM.

Why this exists: every training path (SFT, DPO, adapters, the local provider serving
``local/<adapter dir>``) must be testable and benchmarkable with no model hub. These builders write
real Hugging Face model directories (config, safetensors, tokenizer/processor with a chat template)
that reload with the Auto classes, exactly like a downloaded model. Weights are random: the models
learn only what a test trains into them.

The tokenizer is a byte-level BPE trained in well under a second on a fixed built-in corpus, so it
encodes any text and is identical on every machine. The chat templates are the real ones of the
families they imitate (SmolLM2's ChatML, SmolVLM's "User:/Assistant:" template) or ChatML with
inline ``<image>`` for LLaVA, whose original template has no end-of-turn token to learn.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "TINY_SPECIAL_TOKENS",
    "CHATML_TEMPLATE",
    "SMOLVLM_TEMPLATE",
    "CHATML_VLM_TEMPLATE",
    "build_tiny_tokenizer",
    "build_tiny_text_lm",
    "build_tiny_idefics3",
    "build_tiny_llava",
]

# Idefics3's processor looks these up by name; the row/col tags are only used with image splitting.
_IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IDEFICS3_TOKENS]

# SmolLM2-Instruct's template, verbatim (default system prompt when none is given).
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# SmolVLM-Instruct's (Idefics3) template, verbatim: the assistant text follows "Assistant:" after a space.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# ChatML with images inline where they occur (content as a list of parts).
CHATML_VLM_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_HIDDEN = 64
_LAYERS = 2
_IMAGE_SIZE = 32
_PATCH = 8


def _corpus() -> list[str]:
    """A fixed corpus of agent-step-like text and digits, so common words get merges."""
    prose = [
        "You are a helpful assistant. Solve the task step by step with the tools you are given.",
        "Look at the image, read the text in it, then answer the question in one short sentence.",
        "The user asks about the picture: what color is the sky, and how many birds fly over the sea?",
        "Simple is better than complex. Readability counts. Errors should never pass silently.",
    ]
    agent = [
        "Thought: I will look at the image and count the objects.",
        "Code:\n```py\nresult = objectlocation(object='cat', image='image_1.jpg')\nprint(result)\n```",
        "Observation: [[12, 30, 64, 80], [70, 22, 120, 96]]",
        "final_answer('There are 2 cats in the picture.')",
        "The answer is 42. What is the price of the red car? How many people are in the photo?",
    ]
    digits = [" ".join(str(i * 7919 % 1000) for i in range(k, k + 20)) for k in range(0, 200, 20)]
    return prose + agent + digits


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer (any text encodes) with ChatML and Idefics3 special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=TINY_SPECIAL_TOKENS[3:],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _special_ids(tok) -> dict[str, int]:
    return {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}


def _llama_text_config(vocab_size: int, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        **extra,
    )


def _save(model, processing, out: Path) -> Path:
    # Embeddings are tied to the output head and read after a norm: at the default std 0.02 a 64-wide
    # model's logits stay within about +-1.3 and no LoRA can make a prediction confident. Scale them
    # (std 0.2 at width 64; less for wider models, whose initial loss grows with std^2 * width^2).
    import torch

    scale = 10.0 * _HIDDEN / model.config.get_text_config().hidden_size
    with torch.no_grad():
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        emb.mul_(scale)
        if head.data_ptr() != emb.data_ptr():  # an untied head (the VLMs) gets the same range
            head.mul_(scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = model.config.get_text_config().pad_token_id
    model.save_pretrained(out)
    processing.save_pretrained(out)
    return out


def build_tiny_text_lm(out: Path, *, seed: int = 0, hidden_size: int = _HIDDEN, num_layers: int = _LAYERS) -> Path:
    """A Llama-architecture causal LM (SmolLM2's family) with the tiny tokenizer; returns ``out``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer()
    cfg = _llama_text_config(len(tok), **_special_ids(tok))
    cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size = hidden_size, num_layers, 2 * hidden_size
    return _save(LlamaForCausalLM(cfg), tok, out)


def build_tiny_idefics3(out: Path, *, seed: int = 0) -> Path:
    """An Idefics3 (SmolVLM-1) VLM: 32 px images, 4 image tokens each, no image splitting."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer()
    tok.eos_token = "<end_of_utterance>"  # as in SmolVLM: the template ends every turn with it
    image_token_id = tok.convert_tokens_to_ids("<image>")
    text = _llama_text_config(len(tok), **_special_ids(tok))
    vision = {
        "hidden_size": _HIDDEN,
        "intermediate_size": 2 * _HIDDEN,
        "num_hidden_layers": _LAYERS,
        "num_attention_heads": 4,
        "image_size": _IMAGE_SIZE,
        "patch_size": _PATCH,
    }
    cfg = Idefics3Config(vision_config=vision, text_config=text.to_dict(), scale_factor=2, image_token_id=image_token_id,
                         pad_token_id=tok.pad_token_id)
    image_seq_len = (_IMAGE_SIZE // _PATCH) ** 2 // 4
    images = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": _IMAGE_SIZE},
        max_image_size={"longest_edge": _IMAGE_SIZE},
    )
    proc = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=image_seq_len, chat_template=SMOLVLM_TEMPLATE)
    return _save(Idefics3ForConditionalGeneration(cfg), proc, out)


def build_tiny_llava(out: Path, *, seed: int = 0) -> Path:
    """A LLaVA VLM with a CLIP vision tower: 32 px images, 16 image tokens each."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    text = _llama_text_config(len(tok), **_special_ids(tok))
    vision = CLIPVisionConfig(
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=_LAYERS,
        num_attention_heads=4,
        image_size=_IMAGE_SIZE,
        patch_size=_PATCH,
        projection_dim=_HIDDEN,
    )
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    images = CLIPImageProcessorPil(size={"shortest_edge": _IMAGE_SIZE}, crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE})
    proc = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=_PATCH, vision_feature_select_strategy="default",
                          chat_template=CHATML_VLM_TEMPLATE, image_token="<image>", num_additional_image_tokens=1)
    return _save(LlavaForConditionalGeneration(cfg), proc, out)
