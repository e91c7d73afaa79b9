"""Train/test split by a stable hash of the source video id (the same whatever the seed or run)."""
from __future__ import annotations

import hashlib


def split_of(source_id: str, test_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(f"timewarp-split:{source_id}".encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return "test" if h / 2**64 < test_fraction else "train"


def rank_key(seed: int, key: str) -> str:
    """Deterministic shuffle key: sort by it to get a seeded order independent of listing order."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8", "surrogatepass")).hexdigest()


def item_seed(seed: int, key: str) -> int:
    """A per-item RNG seed from the run seed and the item id (independent of workers and order)."""
    return int(rank_key(seed, key)[:16], 16)
