"""Instruction tuning: the byte-level GPT-2 pre-trained here on tinyshakespeare, imported from its Hugging
Face export, taught to answer "Translate to German: <English caption>" with the Multi30k German caption.

    jaxformer train --config experiments/finetune_shakespeare_pretrain.py --workdir /tmp/shakespeare-byte
    jaxformer export --workdir /tmp/shakespeare-byte --hf /tmp/shakespeare-byte-hf
    python experiments/finetune_shakespeare_multi30k_instruct.py /tmp/multi30k-instruct
    SHAKESPEARE_HF=/tmp/shakespeare-byte-hf MULTI30K_INSTRUCT=/tmp/multi30k-instruct \
        jaxformer train --config experiments/finetune_shakespeare_multi30k_instruct.py --workdir /tmp/multi30k-instruct-run

The third line writes the instructions (train.jsonl, val.jsonl) from ../shared/data/multi30k at run time,
nothing is copied into the repository; a run without them stops with one line saying that command.
Each record is a conversation, `{"messages": [{"role": "user", "content": "Translate to German: <en>"},
{"role": "assistant", "content": "<de>"}]}`, rendered by the chat template beside this file
(finetune_shakespeare_multi30k_instruct.jinja: "Q: ...\\nA: ...\\n"); `data.source="instruct"` puts weight 1
on the assistant turn (the German caption, its newline and eos) and 0 on the prompt and padding.

Only pairs whose whole record fits one row of the base (bos + 128 bytes + eos: `data.max_length=129` =
the base's `max_len`) are written, so nothing is truncated; that keeps the shorter captions (6643 of
the 29000 training pairs, 221 of the 1014 validation pairs; the writer prints the counts).

Full fine-tuning, not LoRA: the base has under a million parameters, so its optimizer state costs
nothing worth saving, and byte-level German is a new skill for a model that has only read Shakespeare
(a rank-8 update is a tight budget for it); LoRA across these datasets is
experiments/finetune_shakespeare_multi30k_lora.py. `train.eval_at_start` evaluates the imported model
before the first step, so metrics.jsonl holds the validation loss on completion tokens before (step 0)
and after. `model.init_from` is the env var SHAKESPEARE_HF (default /tmp/shakespeare-byte-hf) and the
JSONL directory MULTI30K_INSTRUCT (default /tmp/multi30k-instruct), or pass `--config.model.init_from=DIR`
and `--config.data.train_path=...`/`eval_path=...`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jaxformer.experiment import base_config

MULTI30K = "../shared/data/multi30k"
CHAT_TEMPLATE = str(Path(__file__).with_suffix(".jinja"))
INSTRUCTION = "Translate to German: "
MAX_LENGTH = 129  # the base's max_len: model inputs per row (bos + 128 bytes; eos is the last target)
MAKE = f"python {os.path.relpath(__file__)} DIR (then MULTI30K_INSTRUCT=DIR)"


def get_config():
    config = base_config()
    config.model.init_from = os.environ.get("SHAKESPEARE_HF", "/tmp/shakespeare-byte-hf")
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0

    instructions = os.environ.get("MULTI30K_INSTRUCT", "/tmp/multi30k-instruct")
    config.data.source = "instruct"
    config.data.task = "lm"
    config.data.train_path = f"{instructions}/train.jsonl"
    config.data.eval_path = f"{instructions}/val.jsonl"
    config.data.missing_files_hint = MAKE
    config.data.chat_template_path = CHAT_TEMPLATE
    config.data.tokenizer = "byte"  # the base's; its HF export holds no tokenizer.json
    config.data.max_length = MAX_LENGTH
    config.data.truncate = False  # the writer keeps only records that fit; anything longer is a mistake
    config.data.pack = False  # most records fill over half a row

    config.train.steps = 300
    config.train.batch_size = 32
    config.train.learning_rate = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 20
    config.train.end_learning_rate_ratio = 0.1
    config.train.weight_decay = 0.01
    config.train.eval_at_start = True
    config.train.eval_every = 100
    config.train.eval_batches = 0  # the whole validation file
    config.train.num_samples = 0
    config.train.log_every = 25
    config.checkpoint.every = 100
    return config


# Writing the instructions ------------------------------------------------------------------------


def conversation(english: str, german: str) -> dict:
    """One instruction record in the `messages` format."""
    return {"messages": [{"role": "user", "content": INSTRUCTION + english}, {"role": "assistant", "content": german}]}


def make_instructions(out_dir: str | Path, multi30k: str | Path = MULTI30K) -> dict[str, tuple[int, int]]:
    """Write out_dir/{train,val}.jsonl from Multi30k {train,val}.{en,de}.gz, keeping the pairs whose
    record, encoded exactly as the run will encode it (this file's chat template, bytes), fits one row.
    Returns {split: (written, read)}."""
    from jaxformer.data import files
    from jaxformer.data.instruct import ChatTemplate, conversation_segments, encode_record
    from jaxformer.data.tokenizers import ByteTokenizer

    template = ChatTemplate(Path(CHAT_TEMPLATE).read_text(encoding="utf-8"), {}, CHAT_TEMPLATE)
    tokenizer = ByteTokenizer()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val"):
        pairs, _, _ = files.read_parallel(f"{multi30k}/{split}", ".en", ".de")  # .gz found, lengths checked
        kept = []
        for n, (en, de) in enumerate(pairs, start=1):
            record = conversation(en.strip(), de.strip())
            segments = conversation_segments(template, record["messages"], f"{split} line {n}")
            ids, _ = encode_record(segments, tokenizer)
            if len(ids) <= MAX_LENGTH + 1:
                kept.append(json.dumps(record, ensure_ascii=False) + "\n")
        (out / f"{split}.jsonl").write_text("".join(kept), encoding="utf-8")
        counts[split] = (len(kept), len(pairs))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the Multi30k translation instructions this experiment reads.")
    parser.add_argument("out_dir", help="directory for train.jsonl and val.jsonl (then MULTI30K_INSTRUCT=out_dir)")
    parser.add_argument("--multi30k", default=MULTI30K, help=f"Multi30k directory (default {MULTI30K})")
    args = parser.parse_args()
    from jaxformer.data.errors import DataError

    try:
        counts = make_instructions(args.out_dir, args.multi30k)
    except DataError as err:  # a missing or misaligned Multi30k file: its one line, no traceback
        raise SystemExit(f"{err} (pass --multi30k DIR holding Multi30k's {{train,val}}.{{en,de}}[.gz])") from None
    for split, (written, read) in counts.items():
        print(f"{args.out_dir}/{split}.jsonl: {written} of {read} pairs (those that fit {MAX_LENGTH} tokens)")


if __name__ == "__main__":
    main()
