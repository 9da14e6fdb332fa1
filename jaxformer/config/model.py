"""Typed, frozen model configuration.

`ModelConfig` is the single description of an architecture. Every field is
validated when the object is constructed, so a bad value fails at the point
where it is written, with a message naming the field, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

import jax.numpy as jnp

from jaxformer.config.suggest import suggest
from jaxformer.errors import ConfigError

Family = Literal["encoder_only", "decoder_only", "encoder_decoder"]
Activation = Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu", "geglu_tanh", "reglu"]
NormKind = Literal["layernorm", "rmsnorm"]
NormPosition = Literal["pre", "post"]
PositionKind = Literal["sinusoidal", "learned", "rotary", "relative", "none"]
SinusoidalLayout = Literal["interleaved", "concat"]
AttentionImpl = Literal["reference", "xla", "cudnn"]
EncoderHead = Literal["none", "mlm", "classification", "qa", "token_classification"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
DType = Literal["float32", "bfloat16", "float16"]
RopeScaling = Literal["none", "linear", "dynamic", "llama3", "yarn"]
PositionRule = Literal["index", "padding_offset"]
PoolerActivation = Literal["tanh", "relu"]

GATED_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh", "reglu")
_JNP_DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}  # keys: DType


def allowed_values(literal_type: Any) -> tuple[str, ...]:
    """The values a `Literal[...]` type admits."""
    return tuple(get_args(literal_type))


def check_choice(field: str, value: Any, literal_type: Any) -> None:
    """Raise ConfigError unless `value` is one of the literal's values."""
    allowed = allowed_values(literal_type)
    if value not in allowed:
        raise ConfigError(f"{field}={value!r} is not allowed; choose one of {list(allowed)}.{suggest(value, allowed)}")


def check_heads(num_heads: int, num_kv_heads: int) -> None:
    """Raise ConfigError unless the key/value heads K divide the query heads N (grouped-query attention)."""
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ConfigError(
            f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}; "
            "num_kv_heads must divide num_heads (1 = multi-query, num_heads = multi-head)."
        )


def check_positive(field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{field}={value!r} must be a positive integer.")


def check_rate(field: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{field}={value!r} must be a number in [0, 1).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one Transformer.

    Sizes use the einsum legend of `jaxformer.layers`: D = `d_model`,
    N = `num_heads`, K = `num_kv_heads`, H = `head_dim`, F = `d_ff`, V = `vocab_size`.
    """

    family: Family = "decoder_only"
    vocab_size: int = 256
    d_model: int = 128
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: equal to num_heads (MHA); 1: multi-query
    head_dim: int | None = None  # None: d_model // num_heads
    d_ff: int = 512
    num_layers: int = 2  # encoder layers (encoder_decoder) or the only stack
    num_decoder_layers: int | None = None  # encoder_decoder only; None: num_layers
    max_len: int = 512  # longest sequence the model accepts (positions)
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    activation: Activation = "gelu"
    norm: NormKind = "layernorm"
    norm_position: NormPosition = "pre"
    norm_eps: float = 1e-5
    position: PositionKind = "learned"
    sinusoidal_layout: SinusoidalLayout = "interleaved"
    rotary_base: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    relative_bias_per_layer: bool = (
        False  # a relative bias table in every self-attention layer (umT5), not one per stack
    )
    use_bias: bool = True  # biases in attention projections, MLP and norms
    scale_attention_logits: bool = True  # False for T5 (scale folded into init)
    embed_scale: bool = False  # multiply token embeddings by sqrt(d_model) (2017 paper)
    embedding_norm: bool = False  # LayerNorm right after the embeddings (BERT)
    tie_embeddings: bool = True  # output projection = input embedding transposed
    tied_logits_rescale: bool = False  # scale hidden by d_model**-0.5 before tied logits (T5)
    share_embeddings: bool = True  # encoder_decoder: one table for source and target
    final_logits_bias: bool = False  # a learned bias added to the logits (Marian)
    num_token_types: int = 0  # BERT segment embeddings; 0 disables
    pooler: bool = False  # BERT pooler: dense + tanh on the first token
    encoder_head: EncoderHead = "none"  # mlm | classification (pooled) | qa (start/end) | token_classification
    num_classes: int = 2
    attention_impl: AttentionImpl = "xla"
    scan_layers: bool = False
    remat_policy: RematPolicy = "none"
    dtype: DType = "float32"  # compute dtype
    param_dtype: DType = "float32"
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # --- issue 19: today's decoder LLMs (Llama 3, Mistral, Qwen2, Qwen3) -----------------------
    rope_scaling: RopeScaling = "none"  # RoPE frequency rule (transformers' modeling_rope_utils)
    rope_factor: float = 1.0  # linear/dynamic/llama3/yarn scaling factor
    rope_original_max_len: int | None = None  # pretraining context (llama3/yarn/dynamic); None: max_len
    rope_low_freq_factor: float = 1.0  # llama3
    rope_high_freq_factor: float = 4.0  # llama3
    rope_beta_fast: float = 32.0  # yarn
    rope_beta_slow: float = 1.0  # yarn
    rope_attention_factor: float | None = None  # yarn cos/sin scale; None: 0.1 ln(factor) + 1
    rope_truncate: bool = True  # yarn: round the correction range to whole dims
    rotary_fraction: float = 1.0  # partial rotary: only the first int(H * fraction) dims rotate
    qkv_bias: bool = False  # biases on query/key/value projections even when use_bias=False (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3)
    sliding_window: int | None = None  # keys within `sliding_window` slots of the query (Mistral)
    sliding_window_layers: tuple[int, ...] | None = None  # layers that slide; None: all of them
    # --- issue 19: Gemma, Gemma 2, Gemma 3 ---------------------------------------------------------
    norm_scale_offset: float = 0.0  # RMSNorm multiplies by (offset + w); Gemma: 1.0 (w initialised to 0)
    query_pre_attn_scalar: float | None = None  # queries scaled by s**-0.5 instead of head_dim**-0.5 (Gemma 2/3)
    attn_logit_softcap: float | None = None  # attention logits -> c * tanh(logits / c) before the mask (Gemma 2)
    final_logit_softcap: float | None = None  # output logits -> c * tanh(logits / c) (Gemma 2)
    sandwich_norms: bool = False  # extra norms on each sub-layer's output before the residual (Gemma 2/3)
    rope_local_base: float | None = None  # RoPE base of the sliding-window layers (Gemma 3); None: rotary_base
    # --- issue 22: RoBERTa / XLM-RoBERTa / DistilBERT ------------------------------------------------
    # Default positions of encoder_only models: "index" 0..T-1; "padding_offset" (RoBERTa)
    # cumsum(tokens != pad) * (tokens != pad) + pad_token_id, so pads sit at pad_token_id, real tokens from it + 1.
    position_rule: PositionRule = "index"
    # padding_offset: the position pads sit at (real tokens from it + 1); None: pad_token_id, as in RoBERTa's own
    # checkpoints. Set when a fine-tune re-indexes the vocabulary (pad moves to id 0, the positions must not move).
    padding_position: int | None = None
    pooler_activation: PoolerActivation = "tanh"  # pooler: act(W h[:, 0] + b); DistilBERT's classifier: "relu"
    # --- issue 22: BART / mBART -----------------------------------------------------------------
    position_offset: int = 0  # learned table has max_len + offset rows; position p reads row p + offset (BART: 2)
    classifier_token_id: int | None = None  # encoder_decoder classification: decoder state at this token's last place
    # --- issue 22: T5 v1.1 / mT5 / umT5 ------------------------------------------------------------
    hf_model_type: str | None = None  # HF model_type to export as where the fields do not decide it (mT5 = T5 v1.1)

    def __post_init__(self) -> None:
        check_choice("family", self.family, Family)
        check_choice("activation", self.activation, Activation)
        check_choice("norm", self.norm, NormKind)
        check_choice("norm_position", self.norm_position, NormPosition)
        check_choice("position", self.position, PositionKind)
        check_choice("sinusoidal_layout", self.sinusoidal_layout, SinusoidalLayout)
        check_choice("attention_impl", self.attention_impl, AttentionImpl)
        check_choice("encoder_head", self.encoder_head, EncoderHead)
        check_choice("remat_policy", self.remat_policy, RematPolicy)
        check_choice("dtype", self.dtype, DType)
        check_choice("param_dtype", self.param_dtype, DType)
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "num_layers", "max_len"):
            check_positive(name, getattr(self, name))
        for name in ("num_kv_heads", "head_dim", "num_decoder_layers"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_rate("dropout_rate", self.dropout_rate)
        check_rate("attention_dropout_rate", self.attention_dropout_rate)
        if self.head_dim is None and self.d_model % self.num_heads != 0:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads dividing d_model or set head_dim explicitly."
            )
        check_heads(self.num_heads, self.kv_heads)
        if self.position == "rotary" and self.dim_per_head % 2:
            raise ConfigError(f"position='rotary' needs an even head_dim, got head_dim={self.dim_per_head}.")
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ConfigError(f"position='sinusoidal' needs an even d_model, got d_model={self.d_model}.")
        if self.num_token_types and self.family != "encoder_only":
            raise ConfigError(f"num_token_types={self.num_token_types} is only supported for family='encoder_only'.")
        if self.encoder_head in ("classification", "token_classification") and self.num_classes < 1:
            raise ConfigError(f"num_classes={self.num_classes} must be >= 1 for encoder_head={self.encoder_head!r}.")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} must be in [0, vocab_size={self.vocab_size}).")
        if self.position == "relative" and self.relative_buckets < 2:
            raise ConfigError(f"relative_buckets={self.relative_buckets} must be >= 2.")
        if self.relative_bias_per_layer and self.position != "relative":
            raise ConfigError(
                f"relative_bias_per_layer=True gives every layer a relative position bias; it needs "
                f"position='relative', got {self.position!r}."
            )
        if self.hf_model_type is not None and (not isinstance(self.hf_model_type, str) or not self.hf_model_type):
            raise ConfigError(f"hf_model_type={self.hf_model_type!r} must be a non-empty string or None.")
        check_llm_fields(self)
        check_gemma_fields(self)
        check_encoder_family_fields(self)
        check_seq2seq_fields(self)

    # Derived sizes --------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        """K: number of key/value heads."""
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def dim_per_head(self) -> int:
        """H: size of one attention head."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def jnp_dtype(self) -> Any:
        """The compute dtype (`dtype`) as a JAX dtype."""
        return _JNP_DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self) -> Any:
        """The parameters' dtype (`param_dtype`) as a JAX dtype."""
        return _JNP_DTYPES[self.param_dtype]

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers if self.num_decoder_layers is not None else self.num_layers

    def layer_windows(self, num_layers: int | None = None) -> tuple[int, ...]:
        """Sliding-window size of each layer ([L]; 0 = global attention), the data `nn.scan` carries."""
        count = self.num_layers if num_layers is None else num_layers
        if self.sliding_window is None:
            return (0,) * count
        local = set(range(count)) if self.sliding_window_layers is None else set(self.sliding_window_layers)
        return tuple(self.sliding_window if i in local else 0 for i in range(count))

    @property
    def rotary_dim(self) -> int:
        """Rotated dims per head: int(H * rotary_fraction) (the rest pass through)."""
        return int(self.dim_per_head * self.rotary_fraction)

    @property
    def is_gated(self) -> bool:
        return self.activation in GATED_ACTIVATIONS

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied (and validated); unknown fields raise ConfigError."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            key = unknown[0]
            raise ConfigError(f"ModelConfig has no field {key!r}.{suggest(key, field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        return cls().replace(**values)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModelConfig))


def check_llm_fields(config: ModelConfig) -> None:
    """Validate the issue-19 fields (RoPE scaling, partial rotary, qk-norm, sliding window)."""
    check_choice("rope_scaling", config.rope_scaling, RopeScaling)
    if config.sliding_window_layers is not None and not isinstance(config.sliding_window_layers, tuple):
        object.__setattr__(config, "sliding_window_layers", tuple(config.sliding_window_layers))  # JSON lists
    if config.rope_scaling != "none":
        if config.position != "rotary":
            raise ConfigError(f"rope_scaling={config.rope_scaling!r} needs position='rotary', got {config.position!r}.")
        if not config.rope_factor >= 1.0:
            raise ConfigError(f"rope_factor={config.rope_factor!r} must be >= 1 (1 = no scaling).")
    if config.rope_original_max_len is not None:
        check_positive("rope_original_max_len", config.rope_original_max_len)
    if config.rope_scaling == "llama3" and not 0 < config.rope_low_freq_factor < config.rope_high_freq_factor:
        raise ConfigError(
            f"rope_low_freq_factor={config.rope_low_freq_factor} must be > 0 and below "
            f"rope_high_freq_factor={config.rope_high_freq_factor} for rope_scaling='llama3'."
        )
    if not 0.0 < config.rotary_fraction <= 1.0:
        raise ConfigError(f"rotary_fraction={config.rotary_fraction!r} must be in (0, 1].")
    if config.position == "rotary" and (config.rotary_dim < 2 or config.rotary_dim % 2):
        raise ConfigError(
            f"rotary_fraction={config.rotary_fraction} gives {config.rotary_dim} rotated dims of head_dim="
            f"{config.dim_per_head}; it must be even and >= 2."
        )
    if config.qk_norm and config.norm != "rmsnorm":
        raise ConfigError(f"qk_norm=True is an RMSNorm of each head; it needs norm='rmsnorm', got {config.norm!r}.")
    if config.sliding_window is not None:
        check_positive("sliding_window", config.sliding_window)
        if config.family == "encoder_only":
            raise ConfigError("sliding_window is only supported for causal self-attention (decoder stacks).")
    if config.sliding_window_layers is not None:
        if config.sliding_window is None:
            raise ConfigError("sliding_window_layers is set but sliding_window is None; set the window size too.")
        bad = [i for i in config.sliding_window_layers if not isinstance(i, int) or not 0 <= i < config.decoder_layers]
        if bad:
            raise ConfigError(
                f"sliding_window_layers has {bad}; layer indices must lie in [0, {config.decoder_layers})."
            )


def check_gemma_fields(config: ModelConfig) -> None:
    """Validate the Gemma fields (norm offset, query scalar, soft-capping, sandwich norms, local RoPE base)."""
    if not isinstance(config.norm_scale_offset, (int, float)) or isinstance(config.norm_scale_offset, bool):
        raise ConfigError(f"norm_scale_offset={config.norm_scale_offset!r} must be a number (Gemma: 1.0).")
    if config.norm_scale_offset != 0.0 and config.norm != "rmsnorm":
        raise ConfigError(
            f"norm_scale_offset={config.norm_scale_offset} applies to RMSNorm (Gemma's (1 + w)); "
            f"it needs norm='rmsnorm', got {config.norm!r}."
        )
    for name in ("query_pre_attn_scalar", "attn_logit_softcap", "final_logit_softcap", "rope_local_base"):
        value = getattr(config, name)
        if value is not None and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not float(value) > 0.0
        ):
            raise ConfigError(f"{name}={value!r} must be a positive number or None (off).")
    if config.query_pre_attn_scalar is not None and not config.scale_attention_logits:
        raise ConfigError(
            "query_pre_attn_scalar is set but scale_attention_logits=False turns query scaling off; "
            "set scale_attention_logits=True or query_pre_attn_scalar=None."
        )
    if config.sandwich_norms and config.norm_position != "pre":
        raise ConfigError(
            f"sandwich_norms=True adds norms after pre-norm sub-layers; it needs norm_position='pre', "
            f"got {config.norm_position!r}."
        )
    if config.rope_local_base is not None:
        if config.position != "rotary":
            raise ConfigError(f"rope_local_base needs position='rotary', got {config.position!r}.")
        if config.sliding_window is None:
            raise ConfigError(
                "rope_local_base is the RoPE base of the sliding-window (local) layers, but sliding_window "
                "is None; set sliding_window (and sliding_window_layers) or rope_local_base=None."
            )


def check_encoder_family_fields(config: ModelConfig) -> None:
    """Validate the issue-22 fields (RoBERTa's position rule, the pooler's activation)."""
    check_choice("position_rule", config.position_rule, PositionRule)
    check_choice("pooler_activation", config.pooler_activation, PoolerActivation)
    if config.position_rule == "padding_offset":
        if config.family != "encoder_only" or config.position != "learned":
            raise ConfigError(
                f"position_rule='padding_offset' needs family='encoder_only' and position='learned', "
                f"got family={config.family!r}, position={config.position!r}."
            )
        offset = padding_position(config)
        if not 0 <= offset < config.max_len - 1:
            raise ConfigError(
                f"position_rule='padding_offset' puts the first token at position {offset + 1} (the padding "
                f"position + 1), outside max_len={config.max_len}; raise max_len or lower pad_token_id / "
                "padding_position."
            )
    elif config.padding_position is not None:
        raise ConfigError(
            f"padding_position={config.padding_position} applies to position_rule='padding_offset' only; remove it."
        )


def padding_position(config: ModelConfig) -> int:
    """The position pads get under position_rule='padding_offset' (real tokens count up from it + 1)."""
    return config.pad_token_id if config.padding_position is None else config.padding_position


def check_seq2seq_fields(config: ModelConfig) -> None:
    """Validate the issue-22 fields (BART's position offset, the encoder-decoder classification head)."""
    offset = config.position_offset
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigError(f"position_offset={offset!r} must be an integer >= 0 (BART/mBART: 2).")
    if offset and config.position != "learned":
        raise ConfigError(f"position_offset={offset} shifts a learned table; it needs position='learned'.")
    token = config.classifier_token_id
    if token is not None and (
        isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < config.vocab_size
    ):
        raise ConfigError(f"classifier_token_id={token!r} must be a token id in [0, vocab_size={config.vocab_size}).")
    if config.family == "encoder_decoder":
        if config.encoder_head not in ("none", "classification"):
            raise ConfigError(
                f"encoder_head={config.encoder_head!r} is an encoder_only head; "
                "encoder_decoder takes 'none' or 'classification'."
            )
        if config.encoder_head == "classification" and token is None:
            raise ConfigError(
                "encoder_head='classification' on an encoder_decoder reads the decoder state at the last "
                "classifier_token_id of the source; set classifier_token_id (BART: its eos id, 2)."
            )
