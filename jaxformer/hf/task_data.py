"""Fine-tuning features for the QA and token-classification heads: moved to `jaxformer.data.task_data`
(the training pipeline, a floor below, builds them); the names stay importable from here."""

from jaxformer.data.task_data import (
    IGNORED,
    QARecord,
    TaggedRecord,
    answer_positions,
    qa_features,
    read_conll_jsonl,
    read_squad_jsonl,
    tagging_features,
)

__all__ = [
    "IGNORED",
    "QARecord",
    "TaggedRecord",
    "answer_positions",
    "qa_features",
    "read_conll_jsonl",
    "read_squad_jsonl",
    "tagging_features",
]
