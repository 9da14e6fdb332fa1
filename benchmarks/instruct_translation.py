"""Greedy answers of a decoder run to the validation instructions of
experiments/finetune_shakespeare_multi30k_instruct.py, scored against the reference German captions.

    PYTHONPATH=. python -m benchmarks.instruct_translation --workdir W --jsonl DIR/val.jsonl [--limit 100]

Each record's user turn is rendered with the experiment's chat template and generation prompt
("Q: Translate to German: <en>\\nA: "), decoded greedily by `inference.generate` (what `jaxformer generate`
runs), and the answer's first line is compared with the assistant turn: exact match (after stripping
whitespace) and corpus BLEU (sacrebleu, 13a). Prompts are decoded in batches of similar length; each
batch may add `max_len - its longest prompt` tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxformer import inference
from jaxformer.decoding.metrics import bleu, exact_match

TEMPLATE = Path(__file__).resolve().parents[1] / "experiments" / "finetune_shakespeare_multi30k_instruct.jinja"


def load_pairs(path: str | Path, limit: int) -> list[tuple[list[dict], str]]:
    """(messages before the answer, reference answer) of the first `limit` records."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines()[:limit]:
        messages = json.loads(line)["messages"]
        pairs.append((messages[:-1], messages[-1]["content"]))
    return pairs


def answers(workdir: str, prompts: list[str], batch: int = 32) -> list[str]:
    """Greedy first-line answers, in the order of `prompts`."""
    run = inference.load_run(workdir)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].encode()))
    out: dict[int, str] = {}
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        room = run.config.max_len - 1 - max(len(prompts[i].encode()) for i in chunk)  # bos + prompt bytes
        texts = inference.generate(run, [prompts[i] for i in chunk], max_new_tokens=room)
        out.update({i: text.split("\n")[0].strip() for i, text in zip(chunk, texts, strict=True)})
    return [out[i] for i in range(len(prompts))]


def main() -> None:
    from jaxformer.data.instruct import ChatTemplate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a training workdir of a byte-level decoder")
    parser.add_argument("--jsonl", required=True, help="val.jsonl written by the experiment file")
    parser.add_argument("--limit", type=int, default=100, help="records scored (the file's first N)")
    parser.add_argument("--json", help="write the scores and the first answers here")
    args = parser.parse_args()
    template = ChatTemplate(TEMPLATE.read_text(encoding="utf-8"), {}, str(TEMPLATE))
    pairs = load_pairs(args.jsonl, args.limit)
    prompts = [template.render(messages, add_generation_prompt=True) for messages, _ in pairs]
    references = [reference for _, reference in pairs]
    hypotheses = answers(args.workdir, prompts)
    result = {
        "workdir": args.workdir,
        "records": len(pairs),
        "exact_match": exact_match(hypotheses, references),
        "bleu": bleu(hypotheses, references),
        "examples": [
            {"prompt": p, "answer": h, "reference": r}
            for p, h, r in list(zip(prompts, hypotheses, references, strict=True))[:5]
        ],
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
