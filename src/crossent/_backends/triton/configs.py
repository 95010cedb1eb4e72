"""Block sizes and warp counts of the cross-entropy kernels: a small pinned table (no autotuning, so runs
are deterministic and the interpreter, which cannot autotune over several configs, runs the same code).

PROVISIONAL: written without a GPU (2026-11-23); no timing here is measured.
What *was* measured: register use, by compiling the kernels for sm_90a on a CPU-only machine (Triton
3.7.1, its bundled ``ptxas -v``; the ``triton.compile`` recipe is in ``tests/test_triton.py``):

=====================================================  ======  ===============  ==========
variant (bf16, gradient on)                            BLOCK   warps            spills
=====================================================  ======  ===============  ==========
index target, no options / class weights only          32768   32 (32/thread)   none (≤ 64 regs)
index target, weights + smoothing + z-loss + softcap   32768   32               348 B
same                                                   16384   32 (16/thread)   4 B
probability target, no options                         32768   32               268 B
probability target, weights + every option             16384   32               112 B
same                                                   8192    16 (16/thread)   none (121 regs)
two-pass / split-row variants, BLOCK 16384             16384   32               ≤ 32 B
=====================================================  ======  ===============  ==========

Hence the largest row kept in registers depends on how many per-class arrays stay live (z; the target
row q; the class weights w; the softcap's derivative): ``SINGLE_BLOCK_BY_LIVE``. Other values:

* ``MULTI_BLOCK = 16384`` with 32 warps for longer rows: a plain two-pass probe of the largest GPU case
  (H100, V = 128256 bf16) used exactly this and reached 1.51× the copy floor.
* warps: one warp per 512 elements of the block, between 4 and 32 (a rule of thumb, to be measured).
* splitting rows: with fewer than ``SPLIT_BELOW_PROGRAMS = 1024`` programs (about 8 per SM on a 132-SM
  H100) a long row is cut into up to ``MAX_CHUNKS = 64`` chunks of at least ``MIN_BLOCKS_PER_CHUNK``
  blocks, so that the grid gets near 1024 programs (two launches then: partial sums, merge + gradient).

A run on a GPU should time ``SINGLE_BLOCK_BY_LIVE`` ∈ {8192, 16384, 32768, 65536}, ``MULTI_BLOCK`` ∈
{4096, 8192, 16384, 32768}, warps ∈ {4, 8, 16, 32} and ``SPLIT_BELOW_PROGRAMS`` on the benchmark GPU shapes
and replace this table with the measured one (device, Triton version and date noted here).
``benchmarks/gpu/sweep.py`` does exactly that (it patches the values above, checks each config against
the float64 reference, times it against the copy floor and prints the best per shape); it runs as a step
of the one-call GPU kit ``benchmarks/gpu/run.sh`` (see ``benchmarks/gpu/README.md``).
"""

import triton

SINGLE_BLOCK_BY_LIVE = {1: 32768, 2: 16384, 3: 8192, 4: 8192}  # see the table above
MAX_SINGLE_BLOCK = 32768  # a global cap (the tests lower it to force the long-row paths)
MULTI_BLOCK = 16384
SCALE_BLOCK = 4096
SPLIT_BELOW_PROGRAMS = 1024
MAX_CHUNKS = 64
MIN_BLOCKS_PER_CHUNK = 2


def _warps(block: int) -> int:
    return max(4, min(32, block // 512))


def live_arrays(*, prob_target: bool, weighted: bool, smoothing: bool, softcap: bool) -> int:
    """How many per-class arrays a program keeps live: z, plus q, the class weights w (when used per
    class: with smoothing or probability targets) and the softcap's derivative."""
    uses_w = weighted and (smoothing or prob_target)
    return 1 + int(prob_target) + int(uses_w) + int(softcap)


def ce_config(num_classes: int, element_size: int, live: int = 1) -> tuple[int, int]:
    """(BLOCK, num_warps) for ``_ce_kernel`` on rows of ``num_classes`` logits of ``element_size`` bytes
    with ``live`` per-class arrays (:func:`live_arrays`).

    ``BLOCK >= num_classes`` selects the single-read path. (``element_size`` is kept for the measured
    table: bf16 rows might stay on chip longer than fp32 ones.)
    """
    del element_size
    cap = min(MAX_SINGLE_BLOCK, SINGLE_BLOCK_BY_LIVE[min(max(live, 1), 4)])
    single = triton.next_power_of_2(max(num_classes, 16))
    if single <= cap:
        return single, _warps(single)
    block = min(MULTI_BLOCK, cap)
    return block, _warps(block)


def scale_config(num_classes: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for ``_scale_kernel`` (elementwise; a grid of rows × column blocks)."""
    block = min(SCALE_BLOCK, triton.next_power_of_2(max(num_classes, 16)))
    return block, _warps(block)


def split_config(rows: int, num_classes: int, block: int) -> tuple[int, int]:
    """(n_chunks, chunk_size) for rows of ``num_classes`` processed in blocks of ``block`` columns.

    One chunk (the whole row) unless there are few rows and each row spans several blocks; chunk_size
    is a multiple of ``block``.
    """
    n_blocks = triton.cdiv(max(num_classes, 1), block)
    whole = (1, n_blocks * block)
    if rows >= SPLIT_BELOW_PROGRAMS or n_blocks < 2 * MIN_BLOCKS_PER_CHUNK:
        return whole
    wanted = triton.cdiv(SPLIT_BELOW_PROGRAMS, rows)
    n_chunks = min(wanted, n_blocks // MIN_BLOCKS_PER_CHUNK, MAX_CHUNKS)
    if n_chunks < 2:
        return whole
    blocks_per_chunk = triton.cdiv(n_blocks, n_chunks)
    return triton.cdiv(n_blocks, blocks_per_chunk), blocks_per_chunk * block
