"""Labelled records from a text of headed paragraphs (a play: "NAME:" then the speech), split by blocks.

    blocks = build_labelled_blocks(text, r"^([A-Z][A-Za-z' ]*):$", top_labels=10, num_blocks=50, eval_every=10)
    blocks.train, blocks.validation        # lists of (paragraph text, label id)
    blocks.labels                          # label names, id order (most frequent first)

Paragraphs are separated by blank lines. A paragraph whose first line matches `header` (a regular
expression matched against the whole stripped line, its first group -- or the whole match -- is
the label name) becomes one record: the rest of its lines joined by single spaces; paragraphs
without a header, or with nothing after it, are skipped.

Split rule (deterministic, no shuffling): the text is cut into `num_blocks` contiguous blocks of
equal character length; a record belongs to the block holding its header's first character, so
each record lies in exactly one block. Block b is validation when b % eval_every == eval_every - 1
(every eval_every-th block, spread over the whole text), otherwise training. So no validation
record comes from a block that training sees; neighbouring lines of a scene stay on one side
except at the few block boundaries.

Labels: the `top_labels` names with the most training records (0 = all names), ties broken by
name; id 0 is the most frequent. Records of other names are dropped from both splits.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from jaxformer.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class LabelledBlocks:
    train: list[tuple[str, int]]
    validation: list[tuple[str, int]]
    labels: tuple[str, ...]

    def majority_accuracy(self) -> float:
        """Validation accuracy of always answering the most frequent training label (id 0)."""
        return sum(label == 0 for _, label in self.validation) / max(1, len(self.validation))


def headed_paragraphs(text: str, header: str) -> list[tuple[int, str, str]]:
    """(character offset, label name, body) of every headed paragraph of `text`, in order."""
    try:
        pattern = re.compile(header)
    except re.error as err:
        raise DataError(f"data.header_pattern={header!r} is not a valid regular expression ({err}).") from None
    out = []
    for match in re.finditer(r"[^\n]+(?:\n[^\n]+)*", text.replace("\r\n", "\n")):
        first, *rest = match.group(0).split("\n")
        found = pattern.fullmatch(first.strip())
        body = " ".join(line.strip() for line in rest if line.strip())
        if found and body:
            name = found.group(1) if pattern.groups else found.group(0)
            out.append((match.start(), name.strip(), body))
    return out


def build_labelled_blocks(text: str, header: str, top_labels: int, num_blocks: int, eval_every: int) -> LabelledBlocks:
    """Records, labels and the block split of `text` (see the module docstring)."""
    if num_blocks < 2 or eval_every < 2 or eval_every > num_blocks:
        raise DataError(
            f"num_blocks={num_blocks} and eval_block_every={eval_every} must satisfy 2 <= eval_block_every <= "
            "num_blocks, so that both splits get blocks."
        )
    paragraphs = headed_paragraphs(text, header)
    if not paragraphs:
        raise DataError(f"no paragraph starts with a line matching data.header_pattern={header!r}; check the pattern.")
    block_size = len(text) / num_blocks
    train, validation = [], []
    for offset, name, body in paragraphs:
        block = min(num_blocks - 1, int(offset / block_size))
        (validation if block % eval_every == eval_every - 1 else train).append((body, name))
    counts = Counter(name for _, name in train)
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    labels = tuple(ranked[:top_labels] if top_labels else ranked)
    if top_labels and len(labels) < top_labels:
        raise DataError(f"the training blocks hold only {len(labels)} label names, fewer than top_labels={top_labels}.")
    ids = {name: i for i, name in enumerate(labels)}
    keep = lambda records: [(body, ids[name]) for body, name in records if name in ids]  # noqa: E731
    blocks = LabelledBlocks(keep(train), keep(validation), labels)
    if not blocks.validation:
        raise DataError(
            "the validation blocks hold no record of the chosen labels; change num_blocks/eval_block_every."
        )
    return blocks
