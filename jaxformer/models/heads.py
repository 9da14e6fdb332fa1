"""Output heads: language-model logits (tied or untied), BERT pooler, MLM, classifier, span (QA) and tagging heads.

Legend: B batch, T length, D model width, V vocabulary, C classes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.layers.attention import softcap
from jaxformer.layers.axes import constrain, param
from jaxformer.layers.embed import Embed
from jaxformer.layers.feedforward import activation_fn
from jaxformer.layers.linear import project
from jaxformer.layers.norms import make_norm


class Dense(nn.Module):
    """x [..., I] -> [..., O] with logical axes (in_axis, out_axis) on the kernel."""

    features: int
    axes: tuple[str, str]
    use_bias: bool = True
    init_stddev: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = param(
            self,
            "kernel",
            nn.initializers.normal(self.init_stddev),
            (x.shape[-1], self.features),
            self.axes,
            self.param_dtype,
        )
        y = project(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + param(
                self, "bias", nn.initializers.zeros, (self.features,), (self.axes[1],), self.param_dtype
            ).astype(self.dtype)
        return y


def dense(config: ModelConfig, features: int, axes: tuple[str, str], name: str, use_bias: bool | None = None) -> Dense:
    return Dense(
        features,
        axes,
        config.use_bias if use_bias is None else use_bias,
        config.initializer_range,
        config.jnp_dtype,
        config.jnp_param_dtype,
        name=name,
    )


class LMHead(nn.Module):
    """hidden [B, T, D] -> logits [B, T, V] (float32): tied to `embed` or its own kernel."""

    config: ModelConfig
    embed: Embed

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        if cfg.tie_embeddings:
            if cfg.tied_logits_rescale:
                hidden = hidden * cfg.d_model**-0.5
            logits = self.embed.attend(hidden)
        else:
            logits = dense(cfg, cfg.vocab_size, ("embed", "vocab"), "lm_head", use_bias=False)(hidden)
        if cfg.final_logits_bias:
            logits = logits + param(self, "final_logits_bias", nn.initializers.zeros, (cfg.vocab_size,), ("vocab",))
        logits = constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))
        return softcap(logits.astype(jnp.float32), cfg.final_logit_softcap)


POOLER_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}  # BERT/RoBERTa: tanh; DistilBERT's classifier: relu


class Pooler(nn.Module):
    """BERT pooler: act(W h[:, 0] + b), act = config.pooler_activation. hidden [B, T, D] -> [B, D]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        pooled = dense(self.config, self.config.d_model, ("mlp", "embed"), "dense", use_bias=True)(hidden[:, 0])
        return POOLER_ACTIVATIONS[self.config.pooler_activation](pooled)


class MaskedLMHead(nn.Module):
    """BERT MLM head: dense + activation + norm, then tied logits + bias. [B, T, D] -> [B, T, V]."""

    config: ModelConfig
    embed: Embed

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        h = dense(cfg, cfg.d_model, ("mlp", "embed"), "transform", use_bias=True)(hidden)
        h = activation_fn(cfg.activation)(h)
        h = make_norm(cfg.norm, cfg.norm_eps, cfg.use_bias, cfg.jnp_dtype, cfg.jnp_param_dtype, name="norm")(h)
        logits = self.embed.attend(h) + param(self, "bias", nn.initializers.zeros, (cfg.vocab_size,), ("vocab",))
        return logits.astype(jnp.float32)


class ClassifierHead(nn.Module):
    """Sequence classification from the pooled vector: dropout + dense. [B, D] -> [B, C]."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        cfg = self.config
        pooled = nn.Dropout(cfg.dropout_rate)(pooled, deterministic=self.deterministic)
        return dense(cfg, cfg.num_classes, ("embed", "classes"), "dense", use_bias=True)(pooled).astype(jnp.float32)


class SpanHead(nn.Module):
    """Extractive question answering (`*ForQuestionAnswering`): one dense D -> 2 on every token.

    hidden [B, T, D] -> (start_logits [B, T], end_logits [B, T]), float32.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = dense(self.config, 2, ("embed", "classes"), "dense", use_bias=True)(hidden)  # [B, T, 2]
        logits = logits.astype(jnp.float32)
        return logits[..., 0], logits[..., 1]


class TokenClassifierHead(nn.Module):
    """Token classification (`*ForTokenClassification`): dropout + dense on every token. [B, T, D] -> [B, T, C]."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=self.deterministic)
        logits = dense(cfg, cfg.num_classes, ("embed", "classes"), "dense", use_bias=True)(hidden)
        return constrain(logits.astype(jnp.float32), ("activation_batch", "activation_length", None))
