"""Train a tiny, randomly initialised Llama with crossent's fused loss, on the CPU, in a few seconds.

Run:  python examples/train_tiny_lm.py            (a plain PyTorch loop)
      python examples/train_tiny_lm.py --trainer  (transformers.Trainer; needs accelerate)

Needs ``pip install "crossent[transformers]"``. One call, ``patch(model)``, makes every call with
``labels`` compute the causal-LM loss with ``crossent.linear_cross_entropy`` from the last hidden states
and ``lm_head.weight``: the (tokens × vocab) logits are never built. The data are random sequences that
repeat a short pattern, seen again each epoch, so the loss falls within a few steps; the first pattern
(the "prompt") is masked with -100 as in fine-tuning.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import transformers

from crossent.integrations.transformers import patch

VOCAB, SEQ = 4096, 32


def dataset(rows: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Sequences that repeat an 8-token pattern; the first 8 tokens (the "prompt") are not trained on.

    The same few rows every epoch: a tiny model learns them (and the repetition) in a few steps.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rows):
        ids = torch.randint(0, VOCAB, (8,), generator=g).repeat(SEQ // 8)
        labels = ids.clone()
        labels[:8] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def tiny_llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def plain_loop(model: torch.nn.Module, steps: int) -> None:
    rows = dataset(8)
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        loss = model(**batch).loss  # fused: no logits
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step:2d}  loss {loss.item():.3f}")


def with_trainer(model: torch.nn.Module, steps: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=steps,
            learning_rate=1e-2,
            logging_steps=1,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        transformers.Trainer(model=model, args=args, train_dataset=dataset(16)).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", action="store_true", help="train with transformers.Trainer")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    model = patch(tiny_llama())  # the one line
    (with_trainer if args.trainer else plain_loop)(model, args.steps)

    model.eval()  # without labels the model is unchanged: generation works as usual
    ids = dataset(1)[0]["input_ids"]
    prompt = ids[:12].unsqueeze(0)
    with torch.no_grad():
        tokens = model.generate(prompt, max_new_tokens=8, do_sample=False)
    print("expected  ", ids[12:20].tolist())
    print("generated ", tokens[0, 12:].tolist(), "(closer with more steps)")


if __name__ == "__main__":
    main()
