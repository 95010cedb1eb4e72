"""A patched training step never holds the (tokens × vocab) logits: measured in fresh processes.

A tiny Llama with a 128,256-token vocabulary takes one training step on 2 × 256 tokens, whose float32
logits would take 263 MB. Two independent measurements in a fresh process per model: the growth of the
peak resident set over the step, and (over a second step) the largest floating-point tensor any aten op
returns (a dispatch mode). The stock model is measured the same way, so the test shows it can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("transformers")

TOKENS, VOCAB = 2 * 256, 128256
LOGITS_BYTES = TOKENS * VOCAB * 4

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch, transformers
    from torch.utils._python_dispatch import TorchDispatchMode
    from crossent.integrations.transformers import patch

    class Largest(TorchDispatchMode):
        numel = 0
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    mode = sys.argv[1]
    torch.set_num_threads(1)
    config = transformers.LlamaConfig(
        vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).train()
    if mode == "patched":
        patch(model)
    ids = torch.randint(3, 128256, (2, 256))
    model(input_ids=ids[:, :4], labels=ids[:, :4]).loss.backward()  # gradients allocated before
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model(input_ids=ids, labels=ids).loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Largest():  # a second step, with every op's result inspected
        model(input_ids=ids, labels=ids).loss.backward()
    print(json.dumps({"peak_growth_bytes": (after - before) * 1024, "largest_numel": Largest.numel}))
    """
)


@pytest.fixture(scope="module")
def measured() -> dict[str, dict]:
    out = {}
    for mode in ("patched", "stock"):
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT, mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        out[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_peak_memory_of_a_patched_step_stays_below_one_logits_tensor(measured):
    assert measured["patched"]["peak_growth_bytes"] < LOGITS_BYTES
    if measured["stock"]["peak_growth_bytes"] == 0:
        # the peak RSS was set before the step (seen once on a loaded machine): nothing to compare here;
        # the op-level test below still fails if a (tokens x vocab) tensor is ever produced
        pytest.skip("the stock step's peak RSS growth was not observable in this process")
    assert measured["stock"]["peak_growth_bytes"] > LOGITS_BYTES  # it holds the logits (and more)


def test_no_op_of_a_patched_step_returns_a_tokens_by_vocab_tensor(measured):
    assert measured["stock"]["largest_numel"] >= TOKENS * VOCAB
    assert measured["patched"]["largest_numel"] < TOKENS * VOCAB
