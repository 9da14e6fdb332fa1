"""How each model family consumes a batch: forward pass -> (logits, targets, weights).

Batch keys (numpy/jax arrays, [B, L] unless noted):
    decoder_only:    tokens, targets, weights, [positions, segment_ids]
    encoder_decoder: source, target_in, targets, weights,
                     [source_positions, source_segment_ids, target_positions, target_segment_ids]
    encoder_only:    tokens, labels [B], weights [B], [token_type_ids]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.errors import InputError

REQUIRED_KEYS = {
    "decoder_only": ("tokens", "targets", "weights"),
    "encoder_decoder": ("source", "target_in", "targets", "weights"),
    "encoder_only": ("tokens", "labels", "weights"),
}


def check_batch(config: ModelConfig, batch: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS[config.family] if k not in batch]
    if missing:
        raise InputError(f"batch for family={config.family!r} lacks keys {missing}; it has {sorted(batch)}.")


def forward(
    model: Any, params: Any, config: ModelConfig, batch: dict[str, jax.Array], rngs: dict[str, jax.Array] | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Run `model` on `batch`; return logits [..., V|C], targets [...], weights [...]."""
    variables = {"params": params}
    get = batch.get
    if config.family == "decoder_only":
        segment_ids = get("segment_ids")
        valid = segment_ids > 0 if segment_ids is not None else batch["tokens"] != config.pad_token_id
        logits = model.apply(
            variables, batch["tokens"], positions=get("positions"), segment_ids=segment_ids, valid=valid, rngs=rngs
        )
        return logits, batch["targets"], batch["weights"]
    if config.family == "encoder_decoder":
        source_segments = get("source_segment_ids")
        target_segments = get("target_segment_ids")
        source_valid = source_segments > 0 if source_segments is not None else batch["source"] != config.pad_token_id
        target_valid = target_segments > 0 if target_segments is not None else None
        logits = model.apply(
            variables,
            batch["source"],
            batch["target_in"],
            source_valid=source_valid,
            target_valid=target_valid,
            source_positions=get("source_positions"),
            target_positions=get("target_positions"),
            source_segment_ids=source_segments,
            target_segment_ids=target_segments,
            rngs=rngs,
        )
        return logits, batch["targets"], batch["weights"]
    out = model.apply(
        variables,
        batch["tokens"],
        token_type_ids=get("token_type_ids"),
        valid=batch["tokens"] != config.pad_token_id,
        rngs=rngs,
    )
    return out["logits"], batch["labels"], batch["weights"]


def batch_size_of(batch: dict[str, Any]) -> int:
    return int(jnp.shape(batch["weights"])[0])
