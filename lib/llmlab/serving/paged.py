"""A paged KV cache: fixed-size blocks, a free list, a block table per sequence, shared blocks.

vLLM's PagedAttention (Kwon et al., SOSP 2023) keeps every sequence's keys and values in blocks of
``block_size`` token slots taken from one preallocated pool, like pages of virtual memory. A
sequence's *block table* lists its blocks in order, so its token t lives in slot

    slot(t) = table[t // block_size] * block_size + t % block_size,

wherever those blocks happen to be. A block comes off the free list when a sequence grows into it
and goes back when the sequence finishes: a sequence holds at most one partly filled block, so it
wastes fewer than ``block_size`` slots, where reserving its maximum length up front wastes
everything it has not generated yet.

Blocks carry reference counts so that sequences can share them. Full blocks of a prompt are
indexed by the token ids they hold (with everything before them), and a later prompt that starts
with the same tokens takes those blocks instead of storing and computing them again (vLLM's
automatic prefix caching; here a block leaves the index when its last user frees it). A
:meth:`~PagedKVCache.fork` (one prompt, several samples) shares every block, the partly filled last
one too; the first sequence to write into a shared block copies it first (copy-on-write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import torch

from .._checks import check_int
from .._torch import resolve_dtype

__all__ = ["PagedKVCache", "CacheUsage"]


@dataclass(frozen=True)
class CacheUsage:
    """A snapshot of the pool: ``blocks`` in use (each counted once, however many sequences share it),
    ``tokens`` (sum of the sequences' lengths, a shared token counted once per sequence),
    ``sequences``, the ``block_size`` and ``unshared_blocks``, the blocks the same sequences would
    hold with nothing shared (sum of ceil(length / block_size))."""

    blocks: int
    tokens: int
    sequences: int
    block_size: int
    unshared_blocks: int

    @property
    def slots(self) -> int:
        """Token slots held: ``blocks * block_size``."""
        return self.blocks * self.block_size


class PagedKVCache:
    """Keys and values of many sequences in ``num_blocks`` blocks of ``block_size`` token slots.

    Storage per layer: ``keys[layer]`` and ``values[layer]`` of shape (num_blocks * block_size,
    n_kv_heads, head_dim), addressed by slot. Book-keeping (free list, reference counts, block
    tables, lengths, the prefix index) lives on the host, as a scheduler's does; the tensors it
    hands to the model (``slots``, ``slot_table``) are built once per step.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, *, num_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32, device=None):
        n_layers = check_int("n_layers", n_layers, low=1)
        n_kv_heads = check_int("n_kv_heads", n_kv_heads, low=1)
        head_dim = check_int("head_dim", head_dim, low=1)
        num_blocks = check_int("num_blocks", num_blocks, low=1, high=2**31 - 1)
        block_size = check_int("block_size", block_size, low=1, high=65536)
        dtype = resolve_dtype(dtype)
        elements = 2 * n_layers * num_blocks * block_size * n_kv_heads * head_dim
        if elements * torch.finfo(dtype).bits // 8 > 2**40:  # a typo, not a cache: refuse before allocating
            raise ValueError(f"num_blocks * block_size = {num_blocks * block_size} token slots would need "
                             f"{elements * torch.finfo(dtype).bits // 8 / 2**40:.1f} TiB; ask for fewer")
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() hands out the lowest id first
        self.ref_counts = [0] * num_blocks
        self.block_tables: dict[Hashable, list[int]] = {}
        self.lengths: dict[Hashable, int] = {}
        self._prefix_index: dict[tuple, int] = {}  # token ids up to the end of a full block -> that block
        self._indexed_as: dict[int, tuple] = {}
        self.copies = 0  # blocks copied on write
        self.reused_blocks = 0  # blocks taken from the prefix index instead of being computed

    # -- memory ---------------------------------------------------------------------------------

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token slot takes over all layers, keys and values: 2 * layers * kv_heads * head_dim * elem."""
        n_layers, _, n_kv, hd = self.keys.shape
        return 2 * n_layers * n_kv * hd * self.keys.element_size()

    def usage(self) -> CacheUsage:
        """Blocks in use, tokens stored and sequences, now."""
        return CacheUsage(self.num_blocks - len(self.free_blocks), sum(self.lengths.values()), len(self.lengths),
                          self.block_size, sum(self.blocks_needed(n) for n in self.lengths.values()))

    def blocks_needed(self, n_tokens: int) -> int:
        """Blocks a sequence of ``n_tokens`` tokens occupies: ceil(n_tokens / block_size)."""
        return -(-n_tokens // self.block_size)

    # -- sequences ------------------------------------------------------------------------------

    def add(self, seq_id: Hashable, prompt: list[int] | None = None) -> int:
        """Start sequence ``seq_id``; with ``prompt`` (token ids), attach the indexed blocks of its longest
        cached prefix. Returns the number of prompt tokens whose keys and values are already cached
        (a multiple of ``block_size``; at most ``len(prompt) - 1``, since the last prompt token must
        still run to give the first logits)."""
        table: list[int] = []
        if prompt is not None:
            for j in range((len(prompt) - 1) // self.block_size):
                block = self._prefix_index.get(tuple(prompt[: (j + 1) * self.block_size]))
                if block is None:
                    break
                self.ref_counts[block] += 1
                table.append(block)
            self.reused_blocks += len(table)
        self.block_tables[seq_id] = table
        self.lengths[seq_id] = len(table) * self.block_size
        return self.lengths[seq_id]

    def publish(self, seq_id: Hashable, prompt: list[int]) -> None:
        """Index the full blocks that hold ``prompt`` (its first ``len(prompt)`` tokens must be cached),
        so that later sequences starting with the same tokens can share them."""
        table = self.block_tables[seq_id]
        for j in range(len(prompt) // self.block_size):
            key = tuple(prompt[: (j + 1) * self.block_size])
            if key not in self._prefix_index and table[j] not in self._indexed_as:
                self._prefix_index[key] = table[j]
                self._indexed_as[table[j]] = key

    def fork(self, parent: Hashable, child: Hashable) -> None:
        """Start ``child`` as a copy of ``parent`` that shares all its blocks (no bytes copied)."""
        table = list(self.block_tables[parent])
        for block in table:
            self.ref_counts[block] += 1
        self.block_tables[child] = table
        self.lengths[child] = self.lengths[parent]

    def free(self, seq_id: Hashable) -> None:
        """Drop ``seq_id``; blocks no other sequence holds go back to the free list."""
        self._release(self.block_tables.pop(seq_id))
        del self.lengths[seq_id]

    def truncate(self, seq_id: Hashable, length: int) -> None:
        """Shorten ``seq_id`` to its first ``length`` tokens (rejected speculative tokens), freeing whole blocks."""
        table = self.block_tables[seq_id]
        keep = self.blocks_needed(length)
        self._release(table[keep:])
        del table[keep:]
        self.lengths[seq_id] = length

    def _release(self, blocks: list[int]) -> None:
        """Drop one reference to each of ``blocks``; a block nobody holds returns to the free list
        (and leaves the prefix index)."""
        for block in blocks:
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free_blocks.append(block)
                key = self._indexed_as.pop(block, None)
                if key is not None:
                    del self._prefix_index[key]

    def _take_block(self) -> int:
        if not self.free_blocks:
            raise RuntimeError(f"the KV cache is full: all {self.num_blocks} blocks of {self.block_size} slots are in use")
        block = self.free_blocks.pop()
        self.ref_counts[block] = 1
        return block

    def allocate(self, seq_id: Hashable, n: int) -> list[int]:
        """Slots for the next ``n`` tokens of ``seq_id`` (its length grows by ``n``): new blocks come off the
        free list; a shared, partly filled last block is copied first (copy-on-write)."""
        table, start = self.block_tables[seq_id], self.lengths[seq_id]
        bs = self.block_size
        if start % bs and self.ref_counts[table[-1]] > 1:  # we would write into a block someone else reads
            old, new = table[-1], self._take_block()
            used = slice(old * bs, old * bs + start % bs)
            self.keys[:, new * bs: new * bs + start % bs] = self.keys[:, used]
            self.values[:, new * bs: new * bs + start % bs] = self.values[:, used]
            self.ref_counts[old] -= 1
            table[-1] = new
            self.copies += 1
        while len(table) * bs < start + n:
            table.append(self._take_block())
        self.lengths[seq_id] = start + n
        return [table[t // bs] * bs + t % bs for t in range(start, start + n)]

    # -- the tensors the model reads --------------------------------------------------------------

    def slot_table(self, seq_ids: list[Hashable], device=None) -> torch.Tensor:
        """(batch, max_len) LongTensor: row b holds the slots of sequence b's tokens 0..len-1 in order,
        padded with slot 0 (masked out by the attention, never read as data)."""
        bs = self.block_size
        width = max(self.lengths[s] for s in seq_ids)
        rows = []
        for s in seq_ids:
            table, n = self.block_tables[s], self.lengths[s]
            rows.append([table[t // bs] * bs + t % bs for t in range(n)] + [0] * (width - n))
        return torch.tensor(rows, dtype=torch.long, device=device)

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the keys and values (n, n_kv_heads, head_dim) of n tokens at ``slots`` (n,) of ``layer``."""
        self.keys[layer].index_copy_(0, slots, k)
        self.values[layer].index_copy_(0, slots, v)

    def gather(self, layer: int, slot_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``layer`` read from the blocks: (batch, n_kv_heads, max_len, head_dim) each."""
        return (self.keys[layer][slot_table].transpose(1, 2), self.values[layer][slot_table].transpose(1, 2))
