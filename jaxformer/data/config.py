"""`DataConfig`: where examples come from, how they are tokenized, cut and batched.

Every field is a primitive with a default, so an experiment's `config.data` dict maps
onto it one to one (`data.<field>` on the command line). Validation runs at construction
and names the field, the value and what is allowed.

File paths by source (split "validation" reads `eval_path`, "test" reads `test_path`):
    text      `train_path` is a plain-text file (or .gz). `text_unit="file"`: the whole file is one
              document cut into blocks; `"line"`: each non-empty line is a document.
    parallel  `train_path` is a prefix: source = prefix + `source_suffix`, target = prefix +
              `target_suffix`, one sentence per line; ".gz" is appended when only the gzip exists.
    tsv       one example per line: text<TAB>label or source<TAB>target (`tsv_header=True`: the
              first line names the columns and the `*_field`s select them).
    jsonl     one JSON object per line; `text_field` / `source_field` / `target_field` / `label_field`.
    tfds      `tfds_name` (e.g. "wmt14_translate/de-en") in `tfds_data_dir`; splits `*_split`.
    hf        `hf_path`: a `save_to_disk` directory (splits `*_split`) or a parquet/JSON/CSV file for
              training; `eval_path`/`test_path` may name more files.
    synthetic digit strings (`synthetic_task`); held-out splits never overlap training.
    instruct  instruction tuning (task "lm"), one JSON object per line: {"prompt": ..., "completion": ...}
              or {"messages": [{"role": ..., "content": ...}, ...]} rendered with the chat template
              (`chat_template_path`: a .jinja file or a checkpoint directory; default: the directory of
              `tokenizer_path`). The loss covers the completion / assistant turns only (see `instruct.py`).
    labelled_blocks  classification from one text of headed paragraphs (`train_path`, e.g. a play whose
              speeches start with "NAME:"): the header's name is the label (`header_pattern`, the
              `top_labels` most frequent); the text's `num_blocks` contiguous blocks are split, every
              `eval_block_every`-th one is validation (see `labelled_blocks.py`).

Batches hold `batch_size` rows (global; split over processes); with `pack=True` a row holds
several examples. LM documents longer than `max_length` are cut into consecutive blocks (nothing
is dropped, so `truncate` concerns seq2seq, classification and instruct records only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from jaxformer.config import check_choice, suggest
from jaxformer.errors import DataError

Source = Literal["synthetic", "text", "parallel", "tsv", "jsonl", "tfds", "hf", "instruct", "labelled_blocks"]
Task = Literal["lm", "seq2seq", "classification", "qa", "token_classification"]
HEAD_TASKS = ("qa", "token_classification")  # encoder heads fine-tuned from JSONL with a HF tokenizer (task_sources.py)
SyntheticTask = Literal["reverse", "sort", "copy", "majority"]
TokenizerKind = Literal["char", "byte", "sentencepiece", "hf", "digits"]
TextUnit = Literal["file", "line"]
SentencePieceModel = Literal["unigram", "bpe"]

TASKS_OF_SOURCE: dict[str, tuple[str, ...]] = {
    "synthetic": ("seq2seq", "classification"),
    "text": ("lm",),
    "parallel": ("seq2seq",),
    "tsv": ("seq2seq", "classification"),
    "jsonl": ("lm", "seq2seq", "classification", *HEAD_TASKS),
    "tfds": ("lm", "seq2seq", "classification"),
    "hf": ("lm", "seq2seq", "classification"),
    "instruct": ("lm",),
    "labelled_blocks": ("classification",),
}
SYNTHETIC_TASK_KIND = {"reverse": "seq2seq", "sort": "seq2seq", "copy": "seq2seq", "majority": "classification"}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input pipeline settings. The defaults give the embedded synthetic seq2seq task (reverse digits)."""

    source: Source = "synthetic"
    task: Task = "seq2seq"  # lm -> decoder_only, seq2seq -> encoder_decoder, classification -> encoder_only

    # Synthetic digit strings.
    synthetic_task: SyntheticTask = "reverse"  # reverse/sort/copy (seq2seq); majority (classification)
    synthetic_min_length: int = 4  # digits per string, inclusive
    synthetic_max_length: int = 16
    num_train_examples: int = 0  # 0 = fresh examples every epoch (infinite); else a fixed training set of this size
    num_eval_examples: int = 1000  # size of the synthetic validation and test splits
    max_train_examples: int = 0  # non-synthetic sources: use at most this many training records (0 = all)
    max_eval_examples: int = 0  # non-synthetic sources: at most this many validation/test records (0 = all)

    # Local files (see the module docstring for what each source reads).
    train_path: str | None = None
    eval_path: str | None = None
    test_path: str | None = None
    missing_files_hint: str = ""  # local files: how to make them (a command), added to the error when one is missing
    source_suffix: str = ""  # parallel: e.g. ".en" (train_path=".../train" -> ".../train.en[.gz]")
    target_suffix: str = ""  # parallel: e.g. ".de"
    text_unit: TextUnit = "file"  # text source: one document per file or per line
    holdout_fraction: float = 0.0  # local files without eval_path: the training data's tail fraction is validation
    tsv_header: bool = False
    text_field: str = "text"
    source_field: str = "source"
    target_field: str = "target"
    label_field: str = "label"
    num_classes: int = 0  # classification: 0 = infer (max training label + 1)
    prompt_field: str = "prompt"  # instruct: the keys of a prompt/completion record
    completion_field: str = "completion"
    messages_field: str = "messages"  # instruct: the key of a conversation record
    chat_template_path: str | None = None  # instruct: .jinja file or checkpoint dir; None = tokenizer_path's dir
    header_pattern: str = r"([^\s:][^:]*):"  # labelled_blocks: a paragraph's first line (group 1 = the label)
    top_labels: int = 0  # labelled_blocks: keep the k names with most training records (0 = all)
    num_blocks: int = 50  # labelled_blocks: contiguous blocks of equal length the text is cut into
    eval_block_every: int = 10  # labelled_blocks: block b is validation when b % this == this - 1

    # TFDS / Hugging Face datasets.
    tfds_name: str | None = None
    tfds_data_dir: str | None = None
    tfds_download: bool = False  # try to download and prepare when not prepared (needs internet)
    hf_path: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    test_split: str = "test"

    # Tokenizer: pad/bos/eos are ids 0/1/2.
    tokenizer: TokenizerKind = "digits"
    vocab_size: int = 8000  # sentencepiece: size to train (including pad/bos/eos/unk)
    tokenizer_path: str | None = None  # hf: tokenizer.json; sentencepiece: a .model to load (trained there if absent)
    tokenizer_train_examples: int = 1_000_000  # sentencepiece: trained on a sample of at most this many lines
    sentencepiece_model: SentencePieceModel = "unigram"

    # Lengths in tokens (eos/bos included).
    max_length: int = 32  # LM block size / classifier input length / default for the two below
    doc_stride: int = 128  # task="qa": tokens shared by consecutive windows of a long context
    max_source_length: int | None = None  # seq2seq encoder length; None = max_length
    max_target_length: int | None = None  # seq2seq decoder length; None = max_length
    truncate: bool = True  # seq2seq/classification: truncate over-long examples (counted warning) or raise

    # Batching.
    shuffle: bool = True  # a full permutation of the training split, new each epoch (seed, epoch)
    pack: bool = False  # several examples per row, with segment ids and per-segment positions
    pack_pool: float = 1.1  # packing: each batch is filled from examples holding this multiple of its token capacity
    bucket_by_length: bool = False  # batches of similar lengths, padded to the bucket's boundary
    bucket_boundaries: tuple[int, ...] = ()  # increasing ints; () = quarters of the max length, rounded up to 8s
    prefetch: int = 2  # batches prepared ahead by a background thread (0 = none)

    def __post_init__(self) -> None:
        check_choice("source", self.source, Source)
        check_choice("task", self.task, Task)
        check_choice("synthetic_task", self.synthetic_task, SyntheticTask)
        check_choice("tokenizer", self.tokenizer, TokenizerKind)
        check_choice("text_unit", self.text_unit, TextUnit)
        check_choice("sentencepiece_model", self.sentencepiece_model, SentencePieceModel)
        for name in ("synthetic_min_length", "synthetic_max_length", "max_length"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_eval_examples", self.num_eval_examples, minimum=1)
        _check_int("doc_stride", self.doc_stride, minimum=1)
        for name in (
            "num_train_examples",
            "max_train_examples",
            "max_eval_examples",
            "num_classes",
            "prefetch",
            "tokenizer_train_examples",
            "top_labels",
        ):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=2)
        if self.max_length < 2:
            raise DataError(f"max_length={self.max_length} must be >= 2 (a token and its eos).")
        _check_int("vocab_size", self.vocab_size, minimum=16)
        _check_int("num_blocks", self.num_blocks, minimum=2)
        _check_int("eval_block_every", self.eval_block_every, minimum=2)
        if self.eval_block_every > self.num_blocks:
            raise DataError(
                f"eval_block_every={self.eval_block_every} exceeds num_blocks={self.num_blocks}; no block would be "
                "validation. Lower it or raise num_blocks."
            )
        if not isinstance(self.pack_pool, (int, float)) or not 1.0 <= self.pack_pool <= 4.0:
            raise DataError(f"pack_pool={self.pack_pool!r} must be a number in [1, 4].")
        if not isinstance(self.holdout_fraction, (int, float)) or not 0.0 <= self.holdout_fraction < 1.0:
            raise DataError(f"holdout_fraction={self.holdout_fraction!r} must be a number in [0, 1).")
        self._check_combinations()

    def _check_combinations(self) -> None:
        allowed_tasks = TASKS_OF_SOURCE[self.source]
        if self.task not in allowed_tasks:
            raise DataError(
                f"task={self.task!r} is not available for source={self.source!r}; choose one of {list(allowed_tasks)}."
            )
        if self.source == "synthetic":
            kind = SYNTHETIC_TASK_KIND[self.synthetic_task]
            if kind != self.task:
                options = [k for k, v in SYNTHETIC_TASK_KIND.items() if v == self.task]
                raise DataError(
                    f"synthetic_task={self.synthetic_task!r} is a {kind} task but task={self.task!r}; choose one of {options}."
                )
            if self.synthetic_min_length > self.synthetic_max_length:
                raise DataError(
                    f"synthetic_min_length={self.synthetic_min_length} exceeds synthetic_max_length={self.synthetic_max_length}."
                )
            needed = self.synthetic_max_length + (2 if self.task == "classification" else 1)
            for name in ("max_source_length", "max_target_length") if self.task == "seq2seq" else ("max_length",):
                if self.length(name) < needed:
                    raise DataError(
                        f"{name}={self.length(name)} is too short for synthetic_max_length={self.synthetic_max_length}; "
                        f"set it to at least {needed} (digits plus special tokens)."
                    )
        elif self.tokenizer == "digits":
            raise DataError(
                f"tokenizer='digits' only encodes synthetic digit strings, not source={self.source!r}; "
                "choose 'char', 'byte', 'sentencepiece' or 'hf'."
            )
        required = {
            "text": "train_path",
            "parallel": "train_path",
            "tsv": "train_path",
            "jsonl": "train_path",
            "instruct": "train_path",
            "labelled_blocks": "train_path",
            "tfds": "tfds_name",
        }.get(self.source)
        if required and not getattr(self, required):
            raise DataError(f"source={self.source!r} needs data.{required}; it is {getattr(self, required)!r}.")
        if self.source == "hf" and not (self.hf_path or self.train_path):
            raise DataError(
                "source='hf' needs data.hf_path (a save_to_disk directory or a data file) or data.train_path."
            )
        if self.source == "parallel" and (not self.source_suffix or self.source_suffix == self.target_suffix):
            raise DataError(
                f"source='parallel' needs two different suffixes, got source_suffix={self.source_suffix!r}, "
                f"target_suffix={self.target_suffix!r} (e.g. '.en' and '.de')."
            )
        if self.tokenizer == "sentencepiece" and self.vocab_size < 300:
            raise DataError(
                f"vocab_size={self.vocab_size} is too small for tokenizer='sentencepiece': byte fallback alone takes "
                "256 pieces plus 4 special ids; use at least 300 (e.g. 8000)."
            )
        if self.tokenizer == "hf" and not self.tokenizer_path:
            raise DataError("tokenizer='hf' needs data.tokenizer_path pointing at a tokenizer.json file.")
        if self.pack and self.task == "classification":
            raise DataError("pack=True is not available for task='classification' (one label per row); set pack=False.")
        if self.task in HEAD_TASKS and (self.pack or self.bucket_by_length):
            raise DataError(f"pack and bucket_by_length are not available for task={self.task!r}; set both False.")
        if self.pack and self.bucket_by_length:
            raise DataError("pack=True and bucket_by_length=True exclude each other; choose one.")
        boundaries = self.bucket_boundaries
        if isinstance(boundaries, list):  # from a config file or a command-line override
            boundaries = tuple(boundaries)
            object.__setattr__(self, "bucket_boundaries", boundaries)
        if not isinstance(boundaries, tuple):
            raise DataError(f"bucket_boundaries={boundaries!r} must be a tuple of increasing positive integers.")
        if any(not isinstance(b, int) or b < 1 for b in boundaries) or list(boundaries) != sorted(set(boundaries)):
            raise DataError(
                f"bucket_boundaries={boundaries!r} must be increasing positive integers (or () for automatic)."
            )

    def length(self, name: str) -> int:
        """The resolved length limit `name` ("max_length", "max_source_length" or "max_target_length")."""
        value = getattr(self, name)
        return self.max_length if value is None else int(value)

    def replace(self, **changes: Any) -> DataConfig:
        """A validated copy with `changes`; unknown fields raise DataError with the nearest name."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in changes:
            if key not in names:
                raise DataError(f"DataConfig has no field {key!r}.{suggest(key, names)}")
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DataError(f"{name}={value!r} must be an integer >= {minimum}.")
