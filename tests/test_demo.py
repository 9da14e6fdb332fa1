"""The Gradio demo (`jaxformer demo`), served on a free local port and queried with `gradio_client`.

Correctness: the reverse-digits run must answer with the reversed string (the task's definition);
generation through the page must equal `inference.generate` called directly with the same
settings; classification must equal `inference.classify`. Bad input comes back as an error
message and the server keeps answering. A headless-Chromium screenshot (when Debian's chromium
is installed) must show a rendered page.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from support.inference_runs import trained_run
from support.paths import REPO_ROOT

from jaxformer import cli, demo, inference

CHROMIUM = "/usr/bin/chromium"
TRANSLATE_DEFAULTS = (8, "greedy", 4, 0.6, 1.0, 0, 1.0, 0)  # max_new, method, beams, alpha, temp, top_k, top_p, seed


@contextlib.contextmanager
def serve(run: inference.Run) -> Iterator[tuple[Client, str]]:
    app, url = demo.launch(run)
    try:
        yield Client(url, verbose=False), url
    finally:
        app.close()


@pytest.fixture(scope="module")
def reverse(tmp_path_factory: pytest.TempPathFactory) -> inference.Run:
    return inference.load_run(trained_run(tmp_path_factory, "reverse"))


@pytest.fixture(scope="module")
def charlm(tmp_path_factory: pytest.TempPathFactory) -> inference.Run:
    return inference.load_run(trained_run(tmp_path_factory, "charlm"))


@pytest.fixture(scope="module")
def translator(reverse: inference.Run) -> Iterator[tuple[Client, str]]:
    with serve(reverse) as served:
        yield served


@pytest.fixture(scope="module")
def generator(charlm: inference.Run) -> Iterator[tuple[Client, str]]:
    with serve(charlm) as served:
        yield served


def translate(client: Client, text: str, *settings: object) -> str:
    return client.predict(text, *(settings or TRANSLATE_DEFAULTS), api_name="/translate")


def test_translation_demo_answers_correctly(translator: tuple[Client, str]) -> None:
    client, url = translator
    assert url.startswith("http://127.0.0.1:")
    assert translate(client, "25103") == "30152"
    assert translate(client, "8362") == "2638"
    assert translate(client, "4411", 8, "beam", 3, 0.6, 1.0, 0, 1.0, 0) == "1144"


def test_generation_demo_equals_inference(generator: tuple[Client, str], charlm: inference.Run) -> None:
    client, _ = generator
    for method, temperature, top_k, top_p, seed in [("greedy", 1.0, 0, 1.0, 0), ("sample", 0.8, 0, 0.9, 11)]:
        shown = client.predict("the ", 10, method, temperature, top_k, top_p, 4, seed, api_name="/generate")
        direct = inference.generate(
            charlm,
            ["the "],
            max_new_tokens=10,
            method=method,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        assert shown == direct[0] and len(shown) > 0


@pytest.mark.parametrize(
    ("text", "settings", "message"),
    [
        ("", TRANSLATE_DEFAULTS, "the text is empty"),
        ("123", (10**9, "greedy", 4, 0.6, 1.0, 0, 1.0, 0), "max_new_tokens=1000000000 must be an integer in [1, 8]"),
        ("123", (8, "sample", 4, 0.6, 1.0, 0, 5, 0), "top_p=5"),
        ("123", (8, "sample", 4, 0.6, 0.0, 0, 1.0, 0), "temperature=0"),
        ("123", (8, "beam", 10**6, 0.6, 1.0, 0, 1.0, 0), "beam_size=1000000"),
        ("1" * 5000, TRANSLATE_DEFAULTS, "the model takes at most 8"),
    ],
)
def test_bad_translation_input_shows_a_message(
    translator: tuple[Client, str], text: str, settings: tuple, message: str
) -> None:
    client, _ = translator
    with pytest.raises(AppError) as info:
        translate(client, text, *settings)
    assert message in str(info.value)
    assert translate(client, "907") == "709"  # the server still answers


def test_bad_generation_input_shows_a_message(generator: tuple[Client, str]) -> None:
    client, _ = generator
    bad = [
        (("", 12, "greedy", 1.0, 0, 1.0, 4, 0), "the prompt is empty"),
        (("the", 10**9, "greedy", 1.0, 0, 1.0, 4, 0), "max_new_tokens=1000000000 must be an integer in [1, 36]"),
        (("the", 12, "sample", 1.0, 0, 5.0, 4, 0), "top_p=5.0"),
        (("x" * 100, 12, "greedy", 1.0, 0, 1.0, 4, 0), "the model takes at most 24"),
    ]
    for args, message in bad:
        with pytest.raises(AppError) as info:
            client.predict(*args, api_name="/generate")
        assert message in str(info.value)
    assert len(client.predict("the ", 10, "greedy", 1.0, 0, 1.0, 4, 0, api_name="/generate")) > 0


def test_classification_demo_equals_inference(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = inference.load_run(trained_run(tmp_path_factory, "classify"))
    (label, probs), *_ = inference.classify(run, ["9876512"])
    with serve(run) as (client, _):
        shown = client.predict("9876512", api_name="/classify")
        assert shown["label"] == f"class {label}"
        confidences = {c["label"]: c["confidence"] for c in shown["confidences"]}
        assert confidences == pytest.approx({f"class {i}": p for i, p in enumerate(probs)}, abs=1e-6)
        with pytest.raises(AppError, match="the text is empty"):
            client.predict("  ", api_name="/classify")


def test_missing_gradio_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], reverse: inference.Run
) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    with pytest.raises(demo.DemoDependencyError, match=r"pip install 'jaxformer\[demo\]'"):
        demo.build_app(reverse)
    assert cli.main(["demo", "--workdir", str(reverse.workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the demo needs Gradio") and err.count("\n") == 1


def test_demo_command_without_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["demo", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json" in err and err.count("\n") == 1


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")
def test_screenshot_shows_the_rendered_app(tmp_path: Path, reverse: inference.Run) -> None:
    spec = importlib.util.spec_from_file_location("demo_screenshot", REPO_ROOT / "benchmarks" / "demo_screenshot.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out, url, blank = script.capture(reverse.workdir, tmp_path / "demo.png", CHROMIUM)
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (1280, 900)
    assert blank < 0.98, f"the screenshot of {url} is (almost) one colour: {blank:.1%}"
