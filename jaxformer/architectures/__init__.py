"""Each architecture's fixed facts, stated once: `<name>.FIXED` (shared fields) and `<name>.PRESETS`.

`jaxformer.presets` collects the presets; `jaxformer.hf.<name>` builds and exports configs from the same
`FIXED`, so a preset and an imported checkpoint cannot drift apart. Imports only `jaxformer.config`.
"""

from jaxformer.architectures import (
    bart,
    bert,
    distilbert,
    gemma,
    gpt2,
    llama,
    marian,
    mistral,
    qwen,
    roberta,
    t5,
    transformer,
)

MODULES = (gpt2, bert, t5, transformer, marian, llama, mistral, qwen, gemma, roberta, distilbert, bart)

__all__ = [
    "MODULES",
    "bart",
    "bert",
    "distilbert",
    "gemma",
    "gpt2",
    "llama",
    "marian",
    "mistral",
    "qwen",
    "roberta",
    "t5",
    "transformer",
]
