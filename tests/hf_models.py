"""Tiny randomly initialised ``transformers`` causal LMs (no downloads) and a batch with padded labels."""

from __future__ import annotations

from typing import Any

import pytest
import torch

VOCAB = 61
SEQ = 9
_SPECIAL = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
_DECODER = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    **_SPECIAL,
}
_MOE = {"num_experts_per_tok": 2, "output_router_logits": True, "router_aux_loss_coef": 0.5}

# family -> (config class name, config fields); each a reason to be here
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", _DECODER),
    "mistral": ("MistralConfig", {**_DECODER, "sliding_window": None}),
    "qwen2": ("Qwen2Config", {**_DECODER, "tie_word_embeddings": True}),  # tied head
    "qwen3": ("Qwen3Config", {**_DECODER, "head_dim": 8}),
    # final_logit_softcapping small enough that the tanh bends the random-init logits
    "gemma2": ("Gemma2Config", {**_DECODER, "head_dim": 8, "final_logit_softcapping": 0.5}),
    "phi3": ("Phi3Config", _DECODER),
    "phi": ("PhiConfig", {**_DECODER, "resid_pdrop": 0.0, "embd_pdrop": 0.0}),  # lm_head has a bias
    "mixtral": ("MixtralConfig", {**_DECODER, **_MOE, "num_local_experts": 4}),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        {
            **_DECODER,
            **_MOE,
            "num_experts": 4,
            "moe_intermediate_size": 24,
            "shared_expert_intermediate_size": 24,
        },
    ),
    "gpt2": (  # Conv1D blocks, a tied nn.Linear head
        "GPT2Config",
        {
            "vocab_size": VOCAB,
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 64,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            **_SPECIAL,
        },
    ),
    "cohere": ("CohereConfig", {**_DECODER, "logit_scale": 0.25}),  # logits * logit_scale
    "granite": ("GraniteConfig", {**_DECODER, "logits_scaling": 4.0}),  # logits / logits_scaling
}


def make_model(family: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A float32 model of ``family`` with weights drawn from ``seed``, in training mode."""
    import transformers

    name, fields = FAMILIES[family]
    if not hasattr(transformers, name):
        pytest.skip(f"transformers {transformers.__version__} has no {name}")
    config = getattr(transformers, name)(**{**fields, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    return model.train()


def batch(seed: int = 1, rows: int = 2, seq: int = SEQ) -> dict[str, torch.Tensor]:
    """Token ids, an attention mask with left padding in row 0, and labels that are -100 there and at
    a few other places (the tokens a chat template would mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, seq), generator=g)
    mask = torch.ones(rows, seq, dtype=torch.long)
    mask[0, :3] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[-1, 4:6] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
