"""A Gradio web app for any trained run: `jaxformer demo --workdir W [--host 127.0.0.1 --port 0]`.

Or for a Hugging Face checkpoint: `jaxformer demo --model DIR_OR_REPO` (`inference.load_model`).

The page fits the run's model family: text generation (decoder-only), translation
(encoder-decoder) or classification (encoder-only), with the decoding settings as controls.
Every request goes through `jaxformer.inference`, so the app, the CLI and the Python API give
the same answers. Bad input (an empty text, absurd lengths, top_p outside (0, 1], ...) is shown
as an error message in the page; the server keeps serving.

API endpoints (for `gradio_client.Client(url).predict(..., api_name=...)`), inputs in order:
    /generate   prompt, max_new_tokens, method, temperature, top_k, top_p, beam_size, seed  -> text
    /translate  text, max_new_tokens, method, beam_size, alpha, temperature, top_k, top_p, seed -> text
    /classify   text -> {"label": ..., "confidences": [...]} (a gr.Label value)

Gradio is imported only here, lazily; without it the demo explains how to install it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxformer import inference
from jaxformer.config import GENERATE_NEW_TOKENS, SearchConfig
from jaxformer.errors import UserError
from jaxformer.inference import InferenceError, Run

log = logging.getLogger("jaxformer.demo")

EXAMPLES = 3  # held-out inputs offered as clickable examples
EXAMPLE_CHARS = 60


class DemoDependencyError(InferenceError):
    """Gradio is not installed."""


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from a local demo
    try:
        import gradio
    except ImportError:
        raise DemoDependencyError(
            "the demo needs Gradio; install it with: pip install 'jaxformer[demo]' (gradio, gradio_client)."
        ) from None
    return gradio


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _guarded(gr: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn`; a user error becomes a gr.Error (a message in the page); the server never goes down."""

    def handler(*args: Any) -> Any:
        try:
            return fn(*args)
        except UserError as err:  # InferenceError, decoding, data and checkpoint errors: the user can fix these
            raise gr.Error(_one_line(err), print_exception=False) from None
        except Exception as err:  # a bug: say so in the page, keep the traceback in the server log
            log.exception("demo request failed")
            raise gr.Error(f"internal error ({type(err).__name__}): {_one_line(err)}", print_exception=False) from None

    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


def held_out_inputs(run: Run) -> list[str]:
    """A few held-out inputs of the run's validation split (clickable examples in the page)."""
    try:
        pairs = run.pipeline.examples("validation", 2 * EXAMPLES)
    except ValueError:  # no validation split
        return []
    texts = [text[:EXAMPLE_CHARS] for text, _ in pairs if text.strip()]
    return list(dict.fromkeys(texts))[:EXAMPLES]  # distinct, in order


def _int(value: Any) -> Any:
    """Number fields may arrive as floats; whole numbers become ints (others are left to the checks)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Event = tuple[Callable[..., Any], list[Any], Any]  # (handler, input components, output component)


def _wire(gr: Any, fn: Callable[..., Any], button: Any, box: Any, inputs: list[Any], output: Any) -> Event:
    """The button (API endpoint named after `fn`) and Enter in `box` run `fn` on `inputs`."""
    handler = _guarded(gr, fn)
    button.click(handler, inputs, output, api_name=fn.__name__)
    box.submit(handler, inputs, output, api_visibility="private")
    return handler, inputs, output


def _examples(gr: Any, run: Run, box: Any, label: str) -> None:
    if examples := held_out_inputs(run):
        gr.Examples([[e] for e in examples], [box], label=label)


# The controls start at SearchConfig's defaults; `answer` computes what the page shows for them.
DEFAULTS = SearchConfig()


def default_new_tokens(run: Run) -> int:
    """Generation: GENERATE_NEW_TOKENS or half the positions; translation: the training target length
    (both within max_len)."""
    if run.family == "decoder_only":
        return max(1, min(GENERATE_NEW_TOKENS, run.config.max_len // 2))
    return min(run.pipeline.widths[1], run.config.max_len)


def answer(run: Run, text: str) -> Any:
    """What the page shows for `text` with its controls at their defaults (also compiles the decoding program)."""
    if run.family == "encoder_only":
        return inference.classify(run, [text])[0]
    decode = inference.translate if run.family == "encoder_decoder" else inference.generate
    return decode(run, [text], DEFAULTS, max_new_tokens=default_new_tokens(run))[0]


# The three pages ------------------------------------------------------------------------------


def _sampling_controls(gr: Any, run: Run) -> tuple[Any, Any, Any, Any]:
    with gr.Row():
        temperature = gr.Number(value=DEFAULTS.temperature, step=0.1, label="temperature (sample; > 0)")
        top_k = gr.Number(
            value=DEFAULTS.top_k, precision=0, label=f"top-k (sample; 0 = off, <= {run.config.vocab_size})"
        )
        top_p = gr.Number(value=DEFAULTS.top_p, step=0.05, label="top-p (sample; in (0, 1], 1 = off)")
        seed = gr.Number(value=DEFAULTS.seed, precision=0, label="seed (sample)")
    return temperature, top_k, top_p, seed


def _generation_page(gr: Any, run: Run, initial: str | None) -> Event:
    limit = run.config.max_len - 1
    prompt = gr.Textbox(initial, label="Prompt", lines=3, placeholder="Type the start of a text")
    with gr.Row():
        max_new = gr.Number(default_new_tokens(run), precision=0, label=f"max new tokens (prompt + new <= {limit + 1})")
        method = gr.Radio(["greedy", "sample", "beam"], value=DEFAULTS.method, label="method")
        beam_size = gr.Number(value=DEFAULTS.beam_size, precision=0, label="beam size (beam)")
    temperature, top_k, top_p, seed = _sampling_controls(gr, run)
    button = gr.Button("Generate", variant="primary")
    output = gr.Textbox(label="Continuation", lines=6)

    def generate(text: str, n: Any, how: str, temp: Any, k: Any, p: Any, beams: Any, s: Any) -> str:
        search = dict(method=how, max_new_tokens=_int(n), beam_size=_int(beams), temperature=temp, top_k=_int(k))
        return inference.generate(run, [text or ""], top_p=p, seed=_int(s) or 0, **search)[0]

    inputs = [prompt, max_new, method, temperature, top_k, top_p, beam_size, seed]
    _examples(gr, run, prompt, "Held-out prompts")
    return _wire(gr, generate, button, prompt, inputs, output)


def _translation_page(gr: Any, run: Run, initial: str | None) -> Event:
    limit = run.config.max_len
    text = gr.Textbox(initial, label="Input", lines=3, placeholder="Type a sentence to translate")
    with gr.Row():
        max_new = gr.Number(default_new_tokens(run), precision=0, label=f"max new tokens (1..{limit})")
        method = gr.Radio(["greedy", "beam", "sample"], value=DEFAULTS.method, label="method")
        beam_size = gr.Number(value=DEFAULTS.beam_size, precision=0, label="beam size (beam)")
        alpha = gr.Number(value=DEFAULTS.alpha, step=0.1, label="length penalty alpha (beam; >= 0)")
    temperature, top_k, top_p, seed = _sampling_controls(gr, run)
    button = gr.Button("Translate", variant="primary")
    output = gr.Textbox(label="Output", lines=3)

    def translate(source: str, n: Any, how: str, beams: Any, a: Any, temp: Any, k: Any, p: Any, s: Any) -> str:
        search = dict(method=how, max_new_tokens=_int(n), beam_size=_int(beams), alpha=a, temperature=temp)
        return inference.translate(run, [source or ""], top_k=_int(k), top_p=p, seed=_int(s) or 0, **search)[0]

    inputs = [text, max_new, method, beam_size, alpha, temperature, top_k, top_p, seed]
    _examples(gr, run, text, "Held-out inputs")
    return _wire(gr, translate, button, text, inputs, output)


def _classification_page(gr: Any, run: Run, initial: str | None) -> Event:
    text = gr.Textbox(initial, label="Input", lines=3, placeholder="Type a text to classify")
    button = gr.Button("Classify", variant="primary")
    output = gr.Label(label="Class probabilities", num_top_classes=min(run.config.num_classes, 10))

    def classify(source: str) -> dict[str, float]:
        _, probs = inference.classify(run, [source or ""])[0]
        return {f"class {i}": p for i, p in enumerate(probs)}

    _examples(gr, run, text, "Held-out inputs")
    return _wire(gr, classify, button, text, [text], output)


PAGES = {
    "decoder_only": ("Text generation", _generation_page),
    "encoder_decoder": ("Translation", _translation_page),
    "encoder_only": ("Classification", _classification_page),
}


def build_app(run: Run, initial: str | None = None) -> Any:
    """The gr.Blocks app for `run` (not launched). `initial`: text in the input box, decoded when the page opens."""
    gr = _gradio()
    if run.family == "encoder_only" and run.config.encoder_head != "classification":
        raise InferenceError(f"the demo serves encoder-only classifiers; {run.workdir} has no classification head.")
    title, page = PAGES[run.family]
    with gr.Blocks(title=f"jaxformer · {title}", analytics_enabled=False) as app:
        gr.Markdown(f"# jaxformer · {title}\n{run.summary()}.")
        handler, inputs, output = page(gr, run, initial)
        if initial:
            app.load(handler, inputs, output, api_visibility="private")
    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def launch(
    run_or_workdir: Run | str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    step: int | None = None,
    initial: str | None = None,
) -> tuple[Any, str]:
    """Start the app in a background thread; returns (app, url). Stop it with `app.close()`."""
    _gradio()  # fail before the (slower) loading of the run when Gradio is missing
    if isinstance(run_or_workdir, Run):
        run = run_or_workdir
    else:
        run = inference.load_run(run_or_workdir, step)
    if not 0 <= port <= 65535:
        raise InferenceError(f"port={port} must be in [0, 65535] (0: a free one).")
    app = build_app(run, initial)
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=port or free_port(host),
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,
            ssr_mode=False,
        )
    except OSError as err:  # port taken, address not available, ...
        raise InferenceError(f"cannot serve the demo on {host}:{port}: {_one_line(err)}") from None
    return app, url


def wait_until_ready(url: str, timeout: float = 60.0) -> None:
    """Block until the app at `url` answers HTTP (raise TimeoutError after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def serve(run_or_workdir: Run | str | Path, host: str = "127.0.0.1", port: int = 0, step: int | None = None) -> None:
    """`jaxformer demo`: serve until Ctrl-C. A Run may be a HF checkpoint (`inference.load_model`, `--model`)."""
    app, url = launch(run_or_workdir, host, port, step)
    where = run_or_workdir.workdir if isinstance(run_or_workdir, Run) else run_or_workdir
    print(f"jaxformer demo for {where} at {url} (Ctrl-C stops it)", flush=True)
    try:
        app.block_thread()
    finally:
        app.close()


__all__ = [
    "DEFAULTS",
    "DemoDependencyError",
    "answer",
    "build_app",
    "default_new_tokens",
    "free_port",
    "held_out_inputs",
    "launch",
    "serve",
    "wait_until_ready",
]
