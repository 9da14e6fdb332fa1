"""How each model family consumes a batch: forward pass -> (logits, targets, weights).

Batch keys (numpy/jax arrays, [B, L] unless noted):
    decoder_only:    tokens, targets, weights, [positions, segment_ids]
    encoder_decoder: source, target_in, targets, weights,
                     [source_positions, source_segment_ids, target_positions, target_segment_ids]
    encoder_only:    tokens, labels [B], weights [B], [token_type_ids]
      encoder_head="qa":                   tokens, start_positions [B], end_positions [B], weights [B]
      encoder_head="token_classification": tokens, labels [B, L] (-100 or any id < 0: ignored), weights [B, L]

Question answering is scored as two classifications over the L positions, start and end, each
weighted 1/2: the loss is (CE(start) + CE(end)) / 2 per example, transformers'
*ForQuestionAnswering loss (positions clamped to [0, L], L ignored, as there; with an ignored
position the two means are over different counts there, here one mean over the kept halves). Token classification is one classification per token; ignored labels get
weight 0, so the loss is the mean over labelled tokens, as transformers' CrossEntropyLoss.
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
    "qa": ("tokens", "start_positions", "end_positions", "weights"),
}
IGNORE_INDEX = -100  # transformers' ignored label (any negative label is ignored here)


def required_keys(config: ModelConfig) -> tuple[str, ...]:
    if config.family == "encoder_only" and config.encoder_head == "qa":
        return REQUIRED_KEYS["qa"]
    return REQUIRED_KEYS[config.family]


def check_batch(config: ModelConfig, batch: dict[str, Any]) -> None:
    missing = [k for k in required_keys(config) if k not in batch]
    if missing:
        head = f" encoder_head={config.encoder_head!r}" if config.family == "encoder_only" else ""
        raise InputError(f"batch for family={config.family!r}{head} lacks keys {missing}; it has {sorted(batch)}.")


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
    if config.encoder_head == "qa":
        return span_targets(out["start_logits"], out["end_logits"], batch)
    if config.encoder_head == "token_classification":
        return token_targets(out["logits"], batch["labels"], batch["weights"])
    return out["logits"], batch["labels"], batch["weights"]


def span_targets(
    start_logits: jax.Array, end_logits: jax.Array, batch: dict[str, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """start/end logits [B, L] -> logits [B, 2, L], targets [B, 2], weights [B, 2].

    As transformers: positions are clamped to [0, L] and L (past the end) is ignored (weight 0);
    the others weigh 1/2 each.
    """
    logits = jnp.stack([start_logits, end_logits], axis=1)
    length = logits.shape[-1]
    targets = jnp.stack([batch["start_positions"], batch["end_positions"]], axis=1).astype(jnp.int32)
    targets = jnp.clip(targets, 0, length)
    inside = targets < length
    weights = 0.5 * inside * jnp.asarray(batch["weights"], jnp.float32)[:, None]
    return logits, jnp.where(inside, targets, 0), weights


def token_targets(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """logits [B, L, C], labels [B, L] (negative: ignored) -> (logits, targets [B, L] in [0, C), weights [B, L])."""
    labels = labels.astype(jnp.int32)
    keep = labels >= 0
    return logits, jnp.where(keep, labels, 0), jnp.where(keep, jnp.asarray(weights, jnp.float32), 0.0)


def batch_size_of(batch: dict[str, Any]) -> int:
    return int(jnp.shape(batch["weights"])[0])
