"""Chat templates live in `jaxformer.data.chat_template` (instruction-tuning data renders them too,
and data sits below hf); this module keeps the `jaxformer.hf.chat_template` name working."""

from jaxformer.data.chat_template import (
    ChatTemplateError,
    compile_template,
    environment,
    plain_messages,
    render,
)

__all__ = ["ChatTemplateError", "compile_template", "environment", "plain_messages", "render"]
