"""Vocab-parallel cross-entropy on the CPU: each rank holds a slice of the vocabulary.

Run:  torchrun --nproc_per_node 2 examples/vocab_parallel.py

Every rank builds the same full problem from one seed, keeps its slice of the classifier, computes the
sharded loss with ``crossent.distributed`` (gloo on the CPU; NCCL works the same on GPUs), and checks it
against the single-process loss on the full vocabulary. Shards are uneven on purpose.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import crossent.distributed as cd
import crossent.numpy as cn


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()

    # The same data on every rank: 64 tokens, hidden size 32, a vocabulary of 1000 split unevenly.
    torch.manual_seed(0)
    n, hidden, vocab = 64, 32, 1000
    h = torch.randn(n, hidden, dtype=torch.float64)
    lm_head = torch.randn(vocab, hidden, dtype=torch.float64) / hidden**0.5
    target = torch.randint(0, vocab, (n,))
    target[::7] = -100  # padding
    sizes = [vocab // world + (1 if r < vocab % world else 0) for r in range(world)]
    sizes[0] += 3
    sizes[-1] -= 3  # uneven on purpose
    start = sum(sizes[:rank])
    shard = lm_head[start : start + sizes[rank]].clone().requires_grad_()
    h.requires_grad_()

    options = dict(label_smoothing=0.1, z_loss=1e-4)
    loss = cd.linear_cross_entropy(h, shard, target, **options)  # the same value on every rank
    loss.backward()  # shard.grad: this rank's rows; h.grad: the full gradient (one all-reduce)

    logits = (h.detach() @ lm_head.T).numpy()
    expected = float(cn.cross_entropy(logits, target.numpy(), **options))
    grad = cn.cross_entropy_grad(logits, target.numpy(), **options)
    value = float(loss.detach())
    assert abs(value - expected) < 1e-10, (value, expected)
    assert torch.allclose(h.grad, torch.from_numpy(grad @ lm_head.numpy()), atol=1e-10)
    full_weight_grad = torch.from_numpy(grad.T @ h.detach().numpy())
    assert torch.allclose(shard.grad, full_weight_grad[start : start + sizes[rank]], atol=1e-10)
    volume = cd.communication_volume(n, world, label_smoothing=True, dtype=torch.float64)
    print(
        f"rank {rank}/{world}: classes [{start}, {start + sizes[rank]}) loss {value:.6f} "
        f"(single process {expected:.6f}); forward all-reduces {volume['bytes']} bytes per rank"
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
