"""``transformers.Trainer`` with gradient accumulation: a patched model trains to the stock model's weights.

Labels are padded with -100 unevenly across micro-batches, so the result depends on Trainer's
``num_items_in_batch`` (the count over the whole accumulated batch) reaching the fused loss.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it

import transformers  # noqa: E402

from crossent.integrations.transformers import patch  # noqa: E402
from hf_models import VOCAB, make_model  # noqa: E402


def _dataset(rows: int = 8, seq: int = 10) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    out = []
    for i in range(rows):
        ids = torch.randint(3, VOCAB, (seq,), generator=g)
        labels = ids.clone()
        labels[
            : 1 + 2 * (i % 4)
        ] = -100  # 1 to 7 masked prompt tokens: uneven counts per micro-batch
        out.append({"input_ids": ids, "labels": labels})
    return out


def _train(model: torch.nn.Module, tmp_path) -> dict[str, torch.Tensor]:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=2,
        learning_rate=0.5,
        lr_scheduler_type="constant",
        optim="sgd",  # Adam divides by tiny second moments, amplifying rounding
        seed=0,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    transformers.Trainer(model=model, args=args, train_dataset=_dataset()).train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_trainer_with_gradient_accumulation_ends_at_the_stock_weights(tmp_path):
    stock = make_model("llama")
    start = {n: p.detach().clone() for n, p in stock.named_parameters()}
    patched = patch(copy.deepcopy(stock))
    want = _train(stock, tmp_path / "stock")
    got = _train(patched, tmp_path / "patched")
    assert any((want[n] - start[n]).abs().max() > 1e-3 for n in want)  # training moved the weights
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, msg=lambda m, n=name: f"{n}: {m}")
