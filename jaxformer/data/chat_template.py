"""Chat templates: a checkpoint's Jinja2 `chat_template`, rendered as `transformers.apply_chat_template` renders it.

    text = render(template, [{"role": "user", "content": "Hi"}], special_tokens={"eos_token": "<|im_end|>"})

The environment is the one transformers documents for chat templates (templates come from the
Hub and are untrusted code): a sandboxed, immutable Jinja2 environment with `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension, a `{% generation %}` block tag (rendered as its
body), a `tojson` filter that does not escape HTML, and the globals `raise_exception(msg)`,
`strftime_now(fmt)`, `dict(...)` and `namespace(...)` (no underscore-prefixed attributes).
The template sees `messages`, `tools` (None), `documents` (None), `add_generation_prompt`
and the tokenizer's named special tokens (`bos_token`, `eos_token`, ...) as strings.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from jaxformer.errors import InputError

MIN_JINJA = (3, 1, 6)  # older releases have known sandbox escapes
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # names a message's reasoning goes by


class ChatTemplateError(InputError):
    """A chat template that does not compile, or that rejects the conversation (its raise_exception)."""


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks): renders its body."""

    tags = {"generation"}  # noqa: RUF012 -- jinja reads this class attribute

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Dict:
    """`dict(...)` and `dict.fromkeys(...)` for templates, without exposing the type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's namespace(), refusing attribute names that start with an underscore."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Namespace's own signature trick: self is args[0]
        self, rest = args[0], args[1:]
        for name in dict(*rest, **kwargs):
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, dict(*rest, **kwargs))

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r}).")


def environment() -> ImmutableSandboxedEnvironment:
    """The sandboxed Jinja2 environment chat templates are rendered in."""
    version = tuple(int(p) for p in jinja2.__version__.split(".")[:3] if p.isdigit())
    if version < MIN_JINJA:
        raise ChatTemplateError(
            f"chat templates need jinja2>={'.'.join(map(str, MIN_JINJA))} (found {jinja2.__version__}); "
            "pip install -U jinja2."
        )
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_Dict(), namespace=_Namespace)
    return env


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached per source text)."""
    try:
        return environment().from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise ChatTemplateError(f"the chat template does not compile: {err.message} (line {err.lineno}).") from None


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the template sees them: keys with value None dropped, reasoning aliased under each name."""
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"chat message {index} must be a dict with 'role' and 'content', got {message!r}.")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def render(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    **variables: Any,
) -> str:
    """The prompt text of `messages` (e.g. [{"role": "user", "content": "Hi"}]) under `template`.

    special_tokens: {"bos_token": "<s>", "eos_token": "</s>", ...} as the tokenizer names them;
    `variables` (e.g. enable_thinking=False) override them, as apply_chat_template's kwargs do.
    """
    if not messages:
        raise ChatTemplateError("the conversation is empty; give at least one message.")
    context = {**dict(special_tokens or {}), **variables}
    try:
        return compile_template(template).render(
            messages=plain_messages(messages),
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **context,
        )
    except jinja2.exceptions.TemplateError as err:
        text = " ".join(str(err).split())
        raise ChatTemplateError(f"the chat template rejected the conversation: {text}") from None


__all__ = ["ChatTemplateError", "compile_template", "environment", "plain_messages", "render"]
