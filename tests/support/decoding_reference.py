"""Plain no-cache references shared by the decoding tests (not a test module).

Models are random tiny presets in float32. At the default init (initializer_range
0.02) their logits are nearly tied (top-2 gaps down to 2e-5), where fp32 rounding
differences between the cached and uncached paths could flip an argmax. The
parameters here are therefore drawn with a larger spread: every kernel, embedding
and bias ~ N(0, 0.5^2) and every norm scale ~ 1 + N(0, 0.1^2) (a numpy draw over
the abstract parameter tree, so no init compilation is needed). Each reference
step asserts that its top-2 logit gap exceeds 1e-4, so every compared token is a
clear decision.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from jaxformer import models, presets

PARAM_STD = 0.5
MIN_GAP = 1e-4
NEW_TOKENS = 7
PROMPTS = ((5, 6, 7), (8,), (9, 10, 11, 12, 13, 14, 15))  # different lengths in one batch
SOURCES = ((5, 6, 7, 8, 9, 10), (11, 12), (13, 14, 15, 16, 17, 18, 19, 20, 21))
BOS = 1


@functools.cache
def model_and_params(name: str, scan_layers: bool = False, seed: int = 0):
    """(config, params) of a tiny preset with the widened random parameters described above."""
    config = presets.get(name, scan_layers=scan_layers)
    abstract = nn.meta.unbox(models.abstract_params(config))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if jax.tree_util.keystr(path).endswith("['scale']"):
            return (1.0 + rng.normal(0.0, 0.1, leaf.shape)).astype(np.float32)
        return rng.normal(0.0, PARAM_STD, leaf.shape).astype(np.float32)

    return config, jax.tree_util.tree_map_with_path(draw, abstract)


def pick(logits: np.ndarray) -> int:
    """Argmax of [V] logits, asserting the winner is clear of the runner-up."""
    top2 = np.sort(logits)[-2:]
    assert top2[1] - top2[0] > MIN_GAP, f"near-tied logits {top2}: the comparison would be ambiguous"
    return int(np.argmax(logits))


def right_padded(rows, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """rows -> (tokens [B, width] int32 with pad 0 after each row, valid [B, width] bool)."""
    width = max(map(len, rows)) if width is None else width
    tokens = np.zeros((len(rows), width), np.int32)
    valid = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)], valid[i, : len(row)] = row, True
    return tokens, valid


@functools.cache
def full_forward(config):
    """Jitted full forward pass without a cache: logits [B, T, V]."""
    return jax.jit(models.build(config).apply)


def greedy_decoder_only(config, params, prompts, steps: int) -> np.ndarray:
    """No cache: each step reruns the full causal model on prompt + tokens so far and takes the argmax
    at each row's last real position. Rows are right-padded to one fixed width (one compilation);
    with a causal mask, padding after a position cannot change its logits. Returns [B, steps]."""
    width = max(map(len, prompts)) + steps
    sequences = [list(p) for p in prompts]
    for _ in range(steps):
        logits = np.asarray(full_forward(config)({"params": params}, right_padded(sequences, width)[0]))
        for row, sequence in enumerate(sequences):
            sequence.append(pick(logits[row, len(sequence) - 1]))
    return np.array([sequence[len(p) :] for sequence, p in zip(sequences, prompts, strict=True)])


def greedy_encoder_decoder(config, params, sources, steps: int) -> np.ndarray:
    """No cache: each step reruns encoder + decoder on (source, [BOS] + tokens so far) and takes the
    argmax at the last real target position (targets right-padded; the decoder is causal). [B, steps]."""
    source, source_valid = right_padded(sources)
    targets = [[BOS] for _ in sources]
    for _ in range(steps):
        target = right_padded(targets, steps + 1)[0]
        logits = np.asarray(full_forward(config)({"params": params}, source, target, source_valid=source_valid))
        for row, sequence in enumerate(targets):
            sequence.append(pick(logits[row, len(sequence) - 1]))
    return np.array([sequence[1:] for sequence in targets])


@functools.cache
def greedy_reference(name: str, scan_layers: bool = False) -> np.ndarray:
    config, params = model_and_params(name, scan_layers)
    if config.family == "decoder_only":
        return greedy_decoder_only(config, params, PROMPTS, NEW_TOKENS)
    return greedy_encoder_decoder(config, params, SOURCES, NEW_TOKENS)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax over the last axis: x - max - log(sum(exp(x - max)))."""
    x = np.asarray(logits, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sequence_log_prob(config, params, pairs) -> np.ndarray:
    """Sum of log P(token) of each continuation, for pairs [(context, continuation), ...] -> [M].

    One full forward pass without a cache over all pairs, right-padded to fixed widths (the
    decoder is causal, so padding after the scored tokens changes nothing). Decoder-only:
    context = prompt, scored as prompt + continuation. Encoder-decoder: context = source
    (padding masked by source_valid), scored as target [BOS] + continuation."""
    forward = full_forward(config)
    if config.family == "decoder_only":
        rows = [list(context) + list(c) for context, c in pairs]
        offsets = [len(context) for context, _ in pairs]
        logits = forward({"params": params}, right_padded(rows, max(map(len, PROMPTS)) + NEW_TOKENS)[0])
    else:
        rows, offsets = [[BOS, *c] for _, c in pairs], [1] * len(pairs)
        source, source_valid = right_padded([context for context, _ in pairs], max(map(len, SOURCES)))
        target = right_padded(rows, NEW_TOKENS + 1)[0]
        logits = forward({"params": params}, source, target, source_valid=source_valid)
    log_probs = log_softmax(np.asarray(logits))  # [M, T, V]
    # The token at index offset + i is predicted by the logits at index offset + i - 1.
    return np.array(
        [
            sum(log_probs[m, offset + i - 1, token] for i, token in enumerate(continuation))
            for m, ((_, continuation), offset) in enumerate(zip(pairs, offsets, strict=True))
        ]
    )


def cut_at_eos(tokens, eos: int, pad: int = 0) -> list[int]:
    """Replace every token after the first `eos` by `pad`."""
    out, ended = [], False
    for token in tokens:
        out.append(pad if ended else int(token))
        ended = ended or token == eos
    return out
