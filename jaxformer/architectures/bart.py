"""BART (Lewis et al. 2020) and mBART (Liu et al. 2020): denoising sequence-to-sequence Transformers.

Encoder-decoder, one shared embedding table tied to the output, learned positions whose table keeps
2 extra rows first (position p reads row p + 2), a LayerNorm right after the embeddings of both
stacks, gelu, biases everywhere, LayerNorm eps 1e-5 and a `final_logits_bias`. BART is post-norm;
mBART is pre-norm with a final LayerNorm on each stack and scales the token embeddings by sqrt(d_model).
FIXED / MBART_FIXED hold the fields every model of the architecture shares (used by the presets and by
`jaxformer.hf` import/export); PRESETS the published sizes and tiny odd-sized twins.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="encoder_decoder",
    position="learned",
    position_offset=2,
    norm="layernorm",
    norm_position="post",
    norm_eps=1e-5,
    use_bias=True,
    embedding_norm=True,
    share_embeddings=True,
    tie_embeddings=True,
    final_logits_bias=True,
    activation="gelu",
    embed_scale=False,
    dropout_rate=0.1,
    attention_dropout_rate=0.0,
)
MBART_FIXED: dict = dict(FIXED, norm_position="pre", embed_scale=True)

LARGE: dict = dict(d_model=1024, num_heads=16, d_ff=4096, num_layers=12, num_decoder_layers=12, max_len=1024)
# The tiny twins use the sizes of the parity tests' random transformers models (d_model 36, 3 heads, FFN 52,
# vocabulary 97, 2 + 3 layers, 40 positions); pad id 1 as in every BART/mBART checkpoint.
TINY_SEQ2SEQ: dict = dict(TINY, vocab_size=97, num_heads=3, d_ff=52, num_decoder_layers=3, max_len=40, pad_token_id=1)

PRESETS: dict[str, dict] = {
    # facebook/bart-base config.json: 6 + 6 layers, d_model 768, 12 heads, FFN 3072, 50265 tokens, pad 1.
    "bart-base": dict(
        FIXED,
        vocab_size=50265,
        d_model=768,
        num_heads=12,
        d_ff=3072,
        num_layers=6,
        num_decoder_layers=6,
        max_len=1024,
        attention_dropout_rate=0.1,
        pad_token_id=1,
    ),
    # facebook/bart-large: 12 + 12 layers, d_model 1024, 16 heads, FFN 4096.
    "bart-large": dict(FIXED, **LARGE, vocab_size=50265, attention_dropout_rate=0.1, pad_token_id=1),
    # facebook/mbart-large-cc25 (250027 tokens) and facebook/mbart-large-50 (250054): mBART-large sizes.
    "mbart-large-cc25": dict(MBART_FIXED, **LARGE, vocab_size=250027, attention_dropout_rate=0.1, pad_token_id=1),
    "mbart-large-50": dict(MBART_FIXED, **LARGE, vocab_size=250054, attention_dropout_rate=0.1, pad_token_id=1),
    "tiny-bart": dict(FIXED, **TINY_SEQ2SEQ),
    "tiny-mbart": dict(MBART_FIXED, **TINY_SEQ2SEQ),
}
