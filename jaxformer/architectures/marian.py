"""MarianMT (Junczys-Dowmunt et al. 2018; Helsinki-NLP opus-mt): the 2017 Transformer as Marian trains it.

Encoder-decoder, post-LayerNorm (eps 1e-5, fixed in HF Marian), biases everywhere, sinusoidal
positions with all sines before all cosines, one shared embedding table and a `final_logits_bias`.
FIXED holds the fields every model of the architecture shares (used by its presets and by
`jaxformer.hf` import/export); PRESETS the published sizes and a tiny odd-sized twin.
"""

from __future__ import annotations

from jaxformer.architectures.tiny import TINY

FIXED: dict = dict(
    family="encoder_decoder",
    position="sinusoidal",
    sinusoidal_layout="concat",
    norm="layernorm",
    norm_position="post",
    norm_eps=1e-5,
    use_bias=True,
    share_embeddings=True,
    tie_embeddings=True,
    final_logits_bias=True,
    dropout_rate=0.1,
    attention_dropout_rate=0.0,
)

# What every opus-mt checkpoint's config.json sets differently from MarianConfig's defaults.
OPUS_MT: dict = dict(activation="silu", embed_scale=True)

PRESETS: dict[str, dict] = {
    # Helsinki-NLP/opus-mt-en-de config.json: 6 + 6 layers, d_model 512, 8 heads, ffn 2048, 58101 tokens,
    # pad (= decoder start) the last id.
    "marian-opus-mt-en-de": dict(
        FIXED,
        **OPUS_MT,
        vocab_size=58101,
        d_model=512,
        num_heads=8,
        d_ff=2048,
        num_layers=6,
        num_decoder_layers=6,
        max_len=512,
        pad_token_id=58100,
    ),
    "tiny-marian": dict(FIXED, **OPUS_MT, **dict(TINY, num_decoder_layers=3, pad_token_id=98)),
}
