"""Sizes of the tiny test twins: odd, all different, heads dividing width (a transposed axis cannot pass)."""

from __future__ import annotations

TINY: dict = dict(
    vocab_size=99,
    d_model=36,
    num_heads=4,
    d_ff=37,
    num_layers=2,
    max_len=64,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
