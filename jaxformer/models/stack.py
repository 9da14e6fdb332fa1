"""A stack of `TransformerBlock`s, shared by encoders and decoders.

Layers are either unrolled (`layers_0`, `layers_1`, ...) or, with
`config.scan_layers`, one `nn.scan` over a stacked parameter tree `layers` whose
leading axis is the logical axis "layers". `stack_layer_params` and
`unstack_layer_params` convert between the two layouts.

Legend: B batch, T length, S source length, D model width, N heads.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.layers.block import TransformerBlock
from jaxformer.layers.norms import make_norm
from jaxformer.layers.positions import RelativePositionBias, relative_buckets

REMAT_POLICIES: dict[str, Any] = {
    "full": None,  # save nothing, recompute everything
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def block_class(config: ModelConfig) -> Any:
    """TransformerBlock, wrapped in `nn.remat` when the config asks for rematerialisation."""
    if config.remat_policy == "none":
        return TransformerBlock
    return nn.remat(TransformerBlock, policy=REMAT_POLICIES[config.remat_policy], prevent_cse=not config.scan_layers)


class TransformerStack(nn.Module):
    """x [B, T, D] -> [B, T, D] through `num_layers` blocks and a final norm (pre-norm models).

    The stack owns what every layer shares: the relative position bias table (T5
    computes it once per stack; with `relative_bias_per_layer` (umT5) only the bucket
    ids [B, T, S], each layer holding its own table) and, when decoding, the positions of cached keys.
    """

    config: ModelConfig
    num_layers: int
    causal: bool
    has_cross_attention: bool = False
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None,
        positions: jax.Array,
        encoded: jax.Array | None = None,
        cross_mask: jax.Array | None = None,
        kv_valid: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        bias = buckets = None
        if cfg.position == "relative":
            key_positions = positions
            if self.decode:
                key_positions = self._cached_positions(positions)
            if cfg.relative_bias_per_layer:  # umT5: bucket ids once here, each layer looks up its own table
                buckets = relative_buckets(
                    positions, key_positions, not self.causal, cfg.relative_buckets, cfg.relative_max_distance
                )
            else:
                bias = RelativePositionBias(
                    num_heads=cfg.num_heads,
                    num_buckets=cfg.relative_buckets,
                    max_distance=cfg.relative_max_distance,
                    bidirectional=not self.causal,
                    dtype=cfg.jnp_dtype,
                    param_dtype=cfg.jnp_param_dtype,
                    name="relative_position_bias",
                )(positions, key_positions)
        args = (mask, bias, positions, encoded, cross_mask, None, kv_valid, buckets)
        # Per-layer sliding windows [L] (0 = global): data scanned with the layer params, not unrolled code.
        windows = None
        if self.causal and cfg.sliding_window is not None:
            windows = jnp.asarray(cfg.layer_windows(self.num_layers), jnp.int32)
        block = block_class(cfg)
        if cfg.scan_layers:
            scanned = nn.scan(
                block,
                variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * len(args) + (0 if windows is not None else nn.broadcast,),
                length=self.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = scanned(
                cfg, self.has_cross_attention, self.deterministic, self.decode, scan_output=True, name="layers"
            )(x, *args, windows)
        else:
            for i in range(self.num_layers):
                window = None if windows is None else windows[i]
                layer = block(cfg, self.has_cross_attention, self.deterministic, self.decode, name=f"layers_{i}")
                x = layer(x, *args, window)
        if cfg.norm_position == "pre":
            x = make_norm(
                cfg.norm,
                cfg.norm_eps,
                cfg.use_bias,
                cfg.jnp_dtype,
                cfg.jnp_param_dtype,
                name="final_norm",
                scale_offset=cfg.norm_scale_offset,
            )(x)
        return x

    def _cached_positions(self, positions: jax.Array) -> jax.Array:
        """Keep the positions of every cached key slot [B, S_max] for the relative bias."""
        initialised = self.has_variable("cache", "key_positions")
        cached = self.variable("cache", "key_positions", jnp.zeros, positions.shape, positions.dtype)
        index = self.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
        if not initialised:
            return positions
        cached.value = jax.lax.dynamic_update_slice(cached.value, positions, (0, index.value))
        index.value = index.value + positions.shape[1]
        return cached.value


def stack_layer_params(stack_params: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Unrolled stack params (`layers_0..layers_{L-1}`) -> scanned layout (`layers`): each leaf [...] -> [L, ...]."""
    out = {k: v for k, v in stack_params.items() if not k.startswith("layers_")}
    per_layer = [stack_params[f"layers_{i}"] for i in range(num_layers)]
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return out


def unstack_layer_params(stack_params: dict[str, Any]) -> dict[str, Any]:
    """Scanned stack params (`layers`, leaves [L, ...]) -> unrolled layout (`layers_0..`, leaves [...])."""
    out = {k: v for k, v in stack_params.items() if k != "layers"}
    layers = stack_params["layers"]
    num_layers = jax.tree.leaves(layers)[0].shape[0]
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], layers)
    return out
