"""Canonical Huffman coding of non-negative integer symbols, and the bit packing under it (Deep
Compression's last stage, Han et al. 2016, sec. 4; canonical codes as in DEFLATE, RFC 1951 3.2.2).

A code is given by its code lengths alone (one per symbol of the alphabet, 0 = symbol unused):
codes are assigned in order of (length, symbol), so a decoder needs only the lengths. Lengths are
limited to ``MAX_LENGTH`` bits. Bits are written most significant first, into bytes filled from
their high bit; the last byte is padded with zero bits.

Everything is vectorised with numpy: encoding is one pass per code bit; decoding finds the code
length at every bit position at once (a table of 2**L entries), then locates the start of every
2**g-th symbol by pointer doubling (each position's successor after 2, 4, ... 2**g symbols) and
decodes those chunks side by side.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["MAX_LENGTH", "build_code", "canonical_codes", "decode", "encode", "encoded_bits", "pack_bits", "unpack_fixed"]

MAX_LENGTH = 24  # longest code; a window of 24 bits plus a 7-bit shift fits the 32-bit peek


def _as_symbols(symbols, where: str = "symbols") -> np.ndarray:
    a = np.asarray(symbols)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"{where} must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and int(a.min()) < 0:
        raise ValueError(f"{where} must be non-negative, got {int(a.min())}")
    return a


def _as_lengths(lengths) -> np.ndarray:
    lens = np.asarray(lengths)
    if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
        raise ValueError(f"lengths must be a 1-D integer array, got shape {lens.shape} dtype {lens.dtype}")
    lens = lens.astype(np.int64)
    if lens.size and (int(lens.min()) < 0 or int(lens.max()) > MAX_LENGTH):
        raise ValueError(f"code lengths must be in 0..{MAX_LENGTH}, got {int(lens.min())}..{int(lens.max())}")
    used = lens[lens > 0]
    kraft = float(np.sum(np.ldexp(1.0, -used))) if used.size else 0.0
    if kraft > 1.0:
        raise ValueError(f"code lengths are not a prefix code (Kraft sum {kraft} > 1)")
    return lens


# ---------------------------------------------------------------------------------------------
# Building a code
# ---------------------------------------------------------------------------------------------


def build_code(counts, max_length: int = MAX_LENGTH) -> np.ndarray:
    """Huffman code lengths (int64, one per symbol, 0 for a symbol that never occurs) for ``counts``.

    Ties are broken by symbol number, so the same counts always give the same code. A single used
    symbol gets a 1-bit code. Lengths beyond ``max_length`` are shortened by moving leaves up the
    tree (the length-limiting step of JPEG, ITU T.81 Annex K.3), which keeps the code complete.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
        raise ValueError(f"counts must be a 1-D integer array, got shape {counts.shape} dtype {counts.dtype}")
    if counts.size and int(counts.min()) < 0:
        raise ValueError(f"counts must be non-negative, got {int(counts.min())}")
    if not isinstance(max_length, int) or not 1 <= max_length <= MAX_LENGTH:
        raise ValueError(f"max_length must be an integer in 1..{MAX_LENGTH}, got {max_length!r}")
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > 1 << max_length:
        raise ValueError(f"{used.size} symbols cannot have codes of at most {max_length} bits")

    # Huffman's merge on (count, tie-break) with parent links; depths follow from the links.
    n = used.size
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    heap = [(int(counts[s]), i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    nxt = n
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (c1 + c2, nxt))
        nxt += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    for node in range(2 * n - 3, -1, -1):  # parents are numbered after their children: walk down from the root
        depth[node] = depth[parent[node]] + 1
    leaf_depth = depth[:n]

    if int(leaf_depth.max()) > max_length:
        leaf_depth = _limit_lengths(leaf_depth, counts[used], max_length)
    lengths[used] = leaf_depth
    return lengths


def _limit_lengths(depths: np.ndarray, counts: np.ndarray, limit: int) -> np.ndarray:
    """Shorten a complete code to ``limit`` bits: per length, how many codes (``bits``) is adjusted as in
    JPEG's Annex K.3 (two leaves of the longest length become one leaf one level up and the sibling of a
    shorter leaf), then the lengths are handed out again, shortest to the most frequent symbols."""
    bits = np.bincount(depths, minlength=int(depths.max()) + 1).tolist()
    for i in range(len(bits) - 1, limit, -1):
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    per_length = [length for length in range(1, limit + 1) for _ in range(bits[length])]
    order = np.lexsort((np.arange(counts.size), -counts))  # most frequent first, then by symbol
    out = np.empty_like(depths)
    out[order] = per_length
    return out


def canonical_codes(lengths) -> np.ndarray:
    """The canonical code (int64, right-aligned in its length) of every symbol; 0 where the length is 0."""
    lens = _as_lengths(lengths)
    codes = np.zeros(lens.size, dtype=np.int64)
    if not np.any(lens):
        return codes
    order = np.lexsort((np.arange(lens.size), lens))
    order = order[lens[order] > 0]
    sorted_lens = lens[order]
    # in (length, symbol) order each code is the previous one plus one, shifted to the longer length
    code, prev, out = 0, int(sorted_lens[0]), []
    for i, length in enumerate(sorted_lens.tolist()):
        if i:
            code = (code + 1) << (length - prev)
        out.append(code)
        prev = length
    codes[order] = out
    return codes


def encoded_bits(symbols, lengths) -> int:
    """How many bits ``encode`` would write (without writing them)."""
    sym = _as_symbols(symbols)
    lens = _as_lengths(lengths)
    return int(np.bincount(sym, minlength=lens.size)[: lens.size] @ lens) if sym.size else 0


# ---------------------------------------------------------------------------------------------
# Bits
# ---------------------------------------------------------------------------------------------


def pack_bits(values, widths) -> tuple[bytes, int]:
    """(bytes, bit count) of each value written in its width (an int or an array), high bit first."""
    vals = np.asarray(values, dtype=np.int64).reshape(-1)
    w = np.broadcast_to(np.asarray(widths, dtype=np.int64), vals.shape)
    if vals.size == 0:
        return b"", 0
    if int(w.min()) < 0 or int(w.max()) > 62:
        raise ValueError(f"widths must be in 0..62, got {int(w.min())}..{int(w.max())}")
    ends = np.cumsum(w)
    total = int(ends[-1])
    starts = ends - w
    bits = np.zeros(total, dtype=np.uint8)
    for b in range(int(w.max())):  # b-th bit of every value whose width exceeds b
        sel = np.flatnonzero(w > b)
        bits[starts[sel] + b] = (vals[sel] >> (w[sel] - 1 - b)) & 1
    return np.packbits(bits).tobytes(), total


def _words(data: bytes) -> np.ndarray:
    """The 32 bits starting at every byte (big-endian, zeros past the end), as uint32."""
    buf = np.frombuffer(data + b"\0\0\0\0", dtype=np.uint8).astype(np.uint32)
    return (buf[:-3] << 24) | (buf[1:-2] << 16) | (buf[2:-1] << 8) | buf[3:]


def _peek(data: bytes, positions: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` (1..25) bits starting at each bit position, as uint32 (zero bits past the end)."""
    word = _words(data)[positions >> 3]
    return (word << (positions & 7).astype(np.uint32)) >> np.uint32(32 - width)


def _peek_all(data: bytes, width: int) -> np.ndarray:
    """``_peek`` at every bit position 0 .. 8 * len(data) (one more, all zero bits), without a gather."""
    word = _words(data + b"\0")
    out = np.empty((word.size, 8), dtype=np.uint32)
    for shift in range(8):
        np.right_shift(word << np.uint32(shift), np.uint32(32 - width), out=out[:, shift])
    return out.reshape(-1)[: 8 * len(data) + 1]


def unpack_fixed(data: bytes, width: int, count: int) -> np.ndarray:
    """``count`` values of ``width`` bits each (1..24), as written by ``pack_bits``."""
    if not isinstance(width, int) or not 1 <= width <= MAX_LENGTH:
        raise ValueError(f"width must be an integer in 1..{MAX_LENGTH}, got {width!r}")
    if count * width > len(data) * 8:
        raise ValueError(f"{count} values of {width} bits need {-(-count * width // 8)} bytes, got {len(data)}")
    return _peek(data, np.arange(count, dtype=np.int64) * width, width).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Encoding and decoding
# ---------------------------------------------------------------------------------------------


def encode(symbols, lengths) -> tuple[bytes, int]:
    """(bytes, bit count) of ``symbols`` in the canonical code of ``lengths``; refuses a symbol without a code."""
    sym = _as_symbols(symbols)
    lens = _as_lengths(lengths)
    if sym.size == 0:
        return b"", 0
    padded = np.concatenate([lens, [0]])  # a symbol past the alphabet has no code either
    missing = padded[np.minimum(sym, lens.size)] == 0
    if missing.any():
        raise ValueError(f"symbol {int(sym[missing][0])} has no code (its length is 0 or it is outside the {lens.size}-symbol alphabet)")
    codes = canonical_codes(lens)
    return pack_bits(codes[sym], lens[sym])


def _chunk_log2(nbits: int, count: int) -> int:
    """Chunk size 2**g for decoding: each doubling step gathers over all bits, each chunk start is one
    step of a Python loop, each symbol of a chunk one vectorised step (costs measured on a 2-core EPYC)."""
    cost = [g * nbits * 3.5e-9 + -(-count >> g) * 4e-7 + (1 << g) * 1e-5 for g in range(11)]
    return int(np.argmin(cost))


def decode(data: bytes, lengths, count: int, nbits: int | None = None) -> np.ndarray:
    """The ``count`` symbols (int64) that ``encode`` wrote into ``data`` with the code of ``lengths``.

    Refuses data that runs out before ``count`` symbols, holds a bit pattern that is no code, or,
    when the bit count ``encode`` returned is given as ``nbits``, whose symbols do not end there.
    """
    lens = _as_lengths(lengths)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.any(lens):
        raise ValueError(f"cannot decode {count} symbols with an empty code (all lengths 0)")
    if nbits is not None and (not isinstance(nbits, int) or not len(data) * 8 - 8 < nbits <= len(data) * 8):
        raise ValueError(f"nbits must be the bit count of the {len(data)} bytes of data, got {nbits!r}")
    avail = len(data) * 8 if nbits is None else nbits
    L = int(lens.max())

    # Canonical decoding tables: for a window w of L bits, its code length is the least l with
    # w < limit[l], where limit[l] is one past the last l-bit code, left-aligned to L bits.
    per_len = np.bincount(lens[lens > 0], minlength=L + 1)
    first, code, limit = np.zeros(L + 1, np.int64), 0, np.zeros(L, np.int64)
    for length in range(1, L + 1):
        first[length] = code
        code = (code + int(per_len[length])) << 1
        limit[length - 1] = (first[length] + int(per_len[length])) << (L - length)
    order = np.lexsort((np.arange(lens.size), lens))
    by_code = order[lens[order] > 0]  # symbols in code order
    offset = np.concatenate([[0], np.cumsum(per_len[1:])])  # index in by_code of each length's first code

    # The code length starting at every bit position (garbage where no symbol starts; clipped to stay in range).
    window = _peek_all(data, L)[: avail + 1]
    # a table of 2**L code lengths (<= 16 MiB), one per window value; a window that starts no code gets L
    table = np.full(1 << L, L, dtype=np.uint8)
    table[: int(limit[-1])] = np.repeat(np.arange(1, L + 1, dtype=np.uint8), np.diff(np.concatenate([[0], limit])))
    length_at = table[window]
    index_type = np.int32 if avail < 2**31 - 64 else np.int64
    nxt = np.arange(avail + 1, dtype=index_type)
    nxt += length_at
    np.minimum(nxt, avail, out=nxt)

    # Start of every chunk of 2**g symbols: jump[p] = position after 2**g symbols from p (pointer doubling).
    g = _chunk_log2(avail, count)
    jump = nxt
    for _ in range(g):
        jump = jump[jump]
    size = 1 << g
    chunks = -(-count // size)
    chunk_starts = np.empty(chunks, dtype=np.int64)
    p = 0
    for j in range(chunks):
        chunk_starts[j] = p
        p = int(jump[p])
    del jump
    starts = np.empty((size, chunks), dtype=np.int64)  # symbol i of chunk j starts at starts[i, j]
    pos = chunk_starts
    for i in range(size):
        starts[i] = pos
        pos = nxt[pos]
    starts = starts.T.reshape(-1)[:count]

    w = window[starts].astype(np.int64)
    ln = length_at[starts].astype(np.int64)
    end = int(starts[-1] + ln[-1])
    if end > avail or (count > 1 and np.any(starts[1:] <= starts[:-1])):
        raise ValueError(f"Huffman data runs out before {count} symbols were decoded ({len(data)} bytes)")
    if np.any(w >= limit[-1]):
        raise ValueError(f"Huffman data holds a bit pattern that is no code (at bit {int(starts[np.argmax(w >= limit[-1])])})")
    if nbits is not None and end != nbits:
        raise ValueError(f"Huffman data holds {nbits} bits, but {count} symbols end at bit {end}")
    index = offset[ln - 1] + (w >> (L - ln)) - first[ln]
    return by_code[index].astype(np.int64)
