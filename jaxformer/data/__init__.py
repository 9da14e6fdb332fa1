"""Input pipelines: sources (synthetic, local files, TFDS, Hugging Face) -> tokenizer -> batches.

Entry point: `build_pipeline(DataConfig(...), family=..., batch_size=..., seed=...)`.
"""

from jaxformer.data.config import DataConfig
from jaxformer.data.errors import DataError, DataFileNotFoundError, DatasetNotPreparedError, SequenceTooLongError
from jaxformer.data.pipeline import Pipeline, build_pipeline
from jaxformer.data.tokenizers import Tokenizer

__all__ = [
    "DataConfig",
    "DataError",
    "DataFileNotFoundError",
    "DatasetNotPreparedError",
    "Pipeline",
    "SequenceTooLongError",
    "Tokenizer",
    "build_pipeline",
]
