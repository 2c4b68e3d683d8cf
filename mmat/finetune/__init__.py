"""Distil agent trajectories into local students: LoRA SFT and step-DPO for VLMs and text LMs.

Conversations arrive in OpenAI chat format, exactly as the agent saw them; ``data`` turns them into
samples whose loss covers the assistant turns only; ``train_sft`` / ``train_dpo`` write a LoRA
adapter dir (weights, processor, ``mmat_train.json``, ``loss.png``); ``load_student`` and
``generate_chat`` serve it with the prompt layout it was trained on.
"""

from mmat.finetune.adapters import ChatGeneration, generate_chat, load_student
from mmat.finetune.config import DPOTrainConfig, TrainConfig, TrainResult
from mmat.finetune.data import (IGNORE_INDEX, ChatCodec, EncodedSample, SelectionMeta, SelectionReport,
                                conversation_to_row, encode_rows, pair_to_row)
from mmat.finetune.dpo import build_dpo_rows, train_dpo
from mmat.finetune.models import TEXT_LORA_TARGETS, VLM_LORA_TARGETS
from mmat.finetune.sft import train_sft

__all__ = [
    "TrainConfig",
    "DPOTrainConfig",
    "TrainResult",
    "SelectionReport",
    "SelectionMeta",
    "EncodedSample",
    "ChatCodec",
    "IGNORE_INDEX",
    "conversation_to_row",
    "pair_to_row",
    "encode_rows",
    "build_dpo_rows",
    "train_sft",
    "train_dpo",
    "load_student",
    "generate_chat",
    "ChatGeneration",
    "VLM_LORA_TARGETS",
    "TEXT_LORA_TARGETS",
]
