"""`jaxformer generate --model DIR` on Hugging Face checkpoints, the way a user would take that path.

Tiny random Llama and Qwen3 directories are made by `transformers` (save_pretrained), each with a
byte-level BPE `tokenizer.json` trained here by the `tokenizers` library and a tokenizer_config.json
carrying a chat template written below. Checked against transformers on the same files:
- the CLI's greedy continuation == `generate(do_sample=False)` decoded by the same tokenizer;
- `--chat` prompt ids == `AutoTokenizer.apply_chat_template(..., add_generation_prompt=True)`;
- an unsupported model_type, a missing tokenizer.json and an offline uncached repo id: one `error:` line, exit 2.
Subprocesses (each pays the jax import): 5, the three error runs side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from jaxformer import demo, inference  # noqa: E402
from jaxformer.cli import main as cli_main  # noqa: E402
from jaxformer.hf import chat_template  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model speaks in random tokens, but it speaks the same tokens twice.",
    "Rotary positions, grouped heads and RMS norms: a small Llama in JAX.",
    "Qwen writes <b>bold</b> & plain text alike; numbers 12345 and 67890 too.",
    "How many colours does a rainbow have? Seven, they say.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|start_header_id|>", "<|end_header_id|>"]
SPECIALS += ["<|eot_id|>"]

# Qwen-style (ChatML) with a default system message, tojson and raise_exception.
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant. Rules: ' + {'fmt': '<b>&</b>'} | tojson + '<|im_end|>\\n' }}"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "  {%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unknown role ' + message['role']) }}{%- endif %}\n"
    "  {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "  {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)
# Llama-3-style: bos_token from the special tokens, namespace, loop controls, strftime_now, trim/lstrip blocks.
LLAMA_TEMPLATE = """{{ bos_token }}{% set ns = namespace(count=0) %}
{% for message in messages %}
    {% if message['role'] == 'tool' %}{% continue %}{% endif %}
    {% set ns.count = ns.count + 1 %}
    {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{% endfor %}
{% if add_generation_prompt %}
{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{{ ns.count }} message(s) in {{ strftime_now('%Y') }}.
{% endif %}"""

COMMON = dict(
    hidden_size=30,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
PROMPT = "The quick brown fox"
MESSAGE = "How many colours does a rainbow have?"
NEW_TOKENS = 16


def train_tokenizer(bos: str | None) -> Tokenizer:
    """Byte-level BPE on SENTENCES with SPECIALS; `bos` is prepended by the post-processor (Llama) when given."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=331, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    if bos is None:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    return tokenizer


def make_checkpoint(directory: Path, model_type: str) -> Path:
    llama = model_type == "llama"
    tokenizer = train_tokenizer("<s>" if llama else None)
    ids = tokenizer.token_to_id
    if llama:  # two end ids: generation stops at either
        special = dict(bos_token_id=ids("<s>"), eos_token_id=[ids("</s>"), ids("<|eot_id|>")], pad_token_id=None)
        extra = dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0))
        tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    else:
        special = dict(bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
        extra = dict(rope_parameters=dict(rope_type="default", rope_theta=1000000.0), attention_bias=False)
        tokens = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=tokenizer.get_vocab_size(), **COMMON, **special, **extra
    )
    torch.manual_seed(1 if llama else 2)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # larger logits than the init's, so greedy picks are far from ties
        for name, tensor in model.named_parameters():
            if "norm" in name:
                tensor.add_(torch.randn_like(tensor) * 0.1)
            elif "embed" in name or "lm_head" in name:
                tensor.mul_(20.0)
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    template = LLAMA_TEMPLATE if llama else QWEN_TEMPLATE
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template, **tokens}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return {t: make_checkpoint(tmp_path_factory.mktemp(t), t) for t in ("llama", "qwen3")}


def reference_continuation(directory: Path, ids: list[int]) -> tuple[list[int], str]:
    """transformers' greedy new tokens for prompt `ids` and their text decoded by the same tokenizer."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    new = out[0, len(ids) :].tolist()
    return new, tokenizer.decode(new, skip_special_tokens=True)


def reference_chat_ids(directory: Path, message: str) -> list[int]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    out = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def cli_start(*args: str, **env: str) -> subprocess.Popen:
    """The real console script (or `python -m jaxformer.cli`) in a subprocess, on CPU, without JAXFORMER_DEBUG."""
    script = Path(sys.executable).with_name("jaxformer")  # the console script beside python
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "jaxformer.cli"]
    environment = {k: v for k, v in os.environ.items() if k != "JAXFORMER_DEBUG"}
    environment.update(JAX_PLATFORMS="cpu", **env)
    return subprocess.Popen(
        [*command, *args], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    process = cli_start(*args)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_one_error_line(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2, stderr[-3000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from {lines[0]!r}"


# Through the real CLI -------------------------------------------------------------------------


def test_cli_generate_prints_the_transformers_continuation(checkpoints):
    directory = checkpoints["llama"]
    ids = transformers.AutoTokenizer.from_pretrained(directory)(PROMPT)["input_ids"]
    assert ids[0] == Tokenizer.from_file(str(directory / "tokenizer.json")).token_to_id("<s>")  # BOS added
    new, text = reference_continuation(directory, ids)
    assert len(set(new)) > 2, new  # a continuation that can tell a wrong model apart
    proc = cli("generate", "--model", str(directory), "--prompt", PROMPT, "--max_new_tokens", str(NEW_TOKENS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == f"{text}\n"


def test_cli_chat_gives_the_apply_chat_template_ids_and_continuation(checkpoints):
    directory = checkpoints["qwen3"]
    expected = reference_chat_ids(directory, MESSAGE)
    new, text = reference_continuation(directory, expected)
    assert len(set(new)) > 2, new
    proc = cli(
        "generate", "--model", str(directory), "--chat", MESSAGE, "--print_ids", "--method", "greedy",
        "--max_new_tokens", str(NEW_TOKENS),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, rest = proc.stdout.split("\n", 1)
    assert json.loads(first) == {"prompt_ids": expected}
    assert rest == f"{text}\n"


def test_cli_bad_checkpoints_are_one_line_each(checkpoints, tmp_path):
    """Unsupported model_type, missing tokenizer.json, offline uncached repo id (three CLI runs, side by side)."""
    unsupported, untokenized = tmp_path / "xyz", tmp_path / "no_tokenizer"
    unsupported.mkdir()
    config = json.loads((checkpoints["llama"] / "config.json").read_text())
    (unsupported / "config.json").write_text(json.dumps({**config, "model_type": "xyz"}))
    untokenized.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (untokenized / name).write_bytes((checkpoints["qwen3"] / name).read_bytes())
    repo = "jaxformer-tests/no-such-model"
    offline = dict(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    cases = [
        (["--model", str(unsupported)], {}, ["model_type='xyz'", "'llama'", "'qwen3'"]),
        (["--model", str(untokenized)], {}, ["no tokenizer.json", str(untokenized)]),
        (
            ["--model", repo, "--revision", "v1"],
            offline,
            [f"{repo!r}", "'v1'", "HF_HUB_OFFLINE", "hf download", "HF_HOME"],
        ),
    ]
    running = [cli_start("generate", *args, "--prompt", PROMPT, **env) for args, env, _ in cases]
    for process, (_, _, fragments) in zip(running, cases, strict=True):
        stdout, stderr = process.communicate(timeout=300)
        assert stdout == ""
        assert_one_error_line(process.returncode, stderr, *fragments)


# The same path through the Python API (no subprocess) ------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_python_api_prompt_ids_match_transformers(checkpoints, model_type):
    directory = checkpoints[model_type]
    run = inference.load_model(directory)
    assert "Hugging Face checkpoint" in run.summary()
    plain = transformers.AutoTokenizer.from_pretrained(directory)(PROMPT)["input_ids"]
    assert inference.prompt_ids(run, [PROMPT]) == [plain]
    assert inference.prompt_ids(run, [MESSAGE], chat=True) == [reference_chat_ids(directory, MESSAGE)]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_python_api_generation_matches_transformers(checkpoints, model_type):
    """The paths the CLI tests above do not take: Llama chat, Qwen3 plain text."""
    directory = checkpoints[model_type]
    run = inference.load_model(directory)
    is_chat = model_type == "llama"
    ids = inference.prompt_ids(run, [MESSAGE if is_chat else PROMPT], chat=is_chat)[0]
    _, text = reference_continuation(directory, ids)
    assert inference.generate(run, [MESSAGE if is_chat else PROMPT], max_new_tokens=NEW_TOKENS, chat=is_chat) == [text]


def test_a_second_end_id_stops_decoding(checkpoints):
    """Llama's eos_token_id is a list; decode ends at whichever comes first, as transformers stops there."""
    tokenizer = inference.load_model(checkpoints["llama"]).tokenizer
    hello = tokenizer.encode("The lazy dog")
    eot, eos = tokenizer.tokenizer.token_to_id("<|eot_id|>"), tokenizer.tokenizer.token_to_id("</s>")
    assert tokenizer.eos_ids == (eos, eot)
    assert tokenizer.decode([*hello, eot, *hello]) == "The lazy dog"
    assert tokenizer.decode([*hello, eos, *hello]) == "The lazy dog"


def test_no_chat_template_is_one_clear_error(checkpoints, tmp_path):
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((checkpoints["qwen3"] / name).read_bytes())
    run = inference.load_model(tmp_path)
    with pytest.raises(ValueError, match=r"has no chat template.*--prompt"):
        inference.generate(run, [MESSAGE], chat=True)


def test_template_errors_are_chat_template_errors():
    with pytest.raises(chat_template.ChatTemplateError, match="unknown role robot"):
        chat_template.render(QWEN_TEMPLATE, [{"role": "robot", "content": "beep"}])
    with pytest.raises(chat_template.ChatTemplateError, match="does not compile"):
        chat_template.render("{% for m in messages %}", [{"role": "user", "content": "x"}])
    with pytest.raises(chat_template.ChatTemplateError, match="underscore"):
        chat_template.render("{% set ns = namespace(_x=1) %}", [{"role": "user", "content": "x"}])
    sandboxed = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(chat_template.ChatTemplateError, match="unsafe"):
        chat_template.render(sandboxed, [{"role": "user", "content": "x"}])


def test_workdir_and_model_are_exclusive_one_line(capsys, checkpoints, tmp_path):
    for args in ([], ["--workdir", str(tmp_path), "--model", str(checkpoints["llama"])]):
        assert cli_main(["generate", *args, "--prompt", PROMPT]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "of --workdir and --model given; pass exactly one" in lines[0], lines
    assert cli_main(["generate", "--model", str(checkpoints["llama"]), "--prompt", PROMPT, "--chat", MESSAGE]) == 2
    assert "give --prompt TEXT or --chat MESSAGE" in capsys.readouterr().err


def test_demo_builds_its_page_for_a_checkpoint(checkpoints):
    pytest.importorskip("gradio")
    run = inference.load_model(checkpoints["qwen3"])
    assert demo.held_out_inputs(run) == []  # a checkpoint has no validation split to offer examples from
    assert demo.default_new_tokens(run) == 64
    assert demo.build_app(run) is not None


# Translation and evaluation straight from a checkpoint ----------------------------------------

PAIRS = [
    ("The quick brown fox jumps.", "A tiny model speaks."),
    ("Numbers 12345 and 67890 too.", "How many colours?"),
    ("Rotary positions and grouped heads.", "Seven, they say."),
]


def make_t5_checkpoint(directory: Path) -> Path:
    """A tiny random T5 (odd sizes) with a byte-level BPE tokenizer.json that appends </s>, as T5's does."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=301, special_tokens=["<pad>", "</s>", "<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    config = transformers.T5Config(
        vocab_size=tokenizer.get_vocab_size(), d_model=30, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3,
        num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(3)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # T5's init makes every greedy step pick <pad>; spread the weights out
        for name, tensor in model.named_parameters():
            tensor.add_(torch.randn_like(tensor) * 0.1) if "layer_norm" in name else tensor.normal_(0.0, 0.3)
    model.generation_config.max_length = 13  # transformers' output length (start token + 12), jaxformer's default
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokens = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "pad_token": "<pad>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokens), encoding="utf-8")
    return directory


def reference_losses(model, tokenizer, pairs, seq2seq: bool) -> tuple[float, float]:
    """transformers' token-weighted mean NLL and argmax accuracy over `pairs`."""
    nll = correct = count = 0.0
    with torch.no_grad():
        for source, reference in pairs:
            ids = torch.tensor([tokenizer(source)["input_ids"]])
            if seq2seq:
                labels = torch.tensor([tokenizer(reference)["input_ids"]])
                logits = model(input_ids=ids, labels=labels).logits[0]
                targets = labels[0]
            else:
                logits, targets = model(input_ids=ids).logits[0, :-1], ids[0, 1:]
            losses = torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")
            nll += float(losses.sum())
            correct += float((logits.argmax(-1) == targets).sum())
            count += len(targets)
    return nll / count, correct / count


def test_evaluate_a_text_file_matches_transformers_loss(checkpoints, tmp_path, capsys):
    directory = checkpoints["llama"]
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "metrics.json"
    assert cli_main(["evaluate", "--model", str(directory), "--input", str(lines), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    loss, accuracy = reference_losses(
        model, transformers.AutoTokenizer.from_pretrained(directory), [(t, "") for t in SENTENCES], False
    )
    assert metrics["examples"] == len(SENTENCES)
    assert abs(metrics["loss"] - loss) < 1e-5 * max(1.0, loss)
    assert abs(metrics["accuracy"] - accuracy) < 1e-9
    assert "texts.txt: split=test" in capsys.readouterr().out


@pytest.mark.slow
def test_translate_and_evaluate_a_t5_checkpoint_match_transformers(tmp_path):
    """translate --model: greedy == transformers.generate (length from generation_config.json); loss on a TSV."""
    directory = make_t5_checkpoint(tmp_path / "t5")
    run = inference.load_model(directory)
    model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    expected = []
    with torch.no_grad():
        for source, _ in PAIRS:
            ids = torch.tensor([tokenizer(source)["input_ids"]])
            out = model.generate(ids, do_sample=False, use_cache=False)  # max_length from generation_config.json
            expected.append(tokenizer.decode(out[0, 1:].tolist(), skip_special_tokens=True))
    assert len(set(expected)) > 1
    assert all(len(tokenizer(text)["input_ids"]) > 4 for text in expected)  # long outputs, no early stop
    assert inference.translate(run, [s for s, _ in PAIRS]) == expected
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{r}\n" for s, r in PAIRS), encoding="utf-8")
    metrics = inference.evaluate(inference.with_eval_data(run, data), "test")
    loss, accuracy = reference_losses(model, tokenizer, PAIRS, True)
    assert abs(metrics["loss"] - loss) < 1e-5 * max(1.0, loss)
    assert abs(metrics["accuracy"] - accuracy) < 1e-9
    assert metrics["examples"] == len(PAIRS) and "bleu" in metrics and "chrf" in metrics


GENERATION_TEMPLATE = """{% for m in messages %}
{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}
{% elif m.role == 'user' %}{{ '[U] ' + m.content | tojson(indent=2) }}
{% else %}{% break %}{% endif %}
{% endfor %}{% if add_generation_prompt %}[A]{% endif %}{{ dict(a=1) | tojson }}{{ thinking_note | default('') }}"""


@pytest.mark.parametrize("template", [QWEN_TEMPLATE, LLAMA_TEMPLATE, GENERATION_TEMPLATE])
def test_render_matches_transformers_render_jinja_template(template):
    """Our environment renders exactly what transformers' own renderer does, on a multi-turn conversation."""
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [
        {"role": "user", "content": "Hi <b>&</b> \u00e9"},
        {"role": "assistant", "content": "Hello.", "reasoning": "be brief", "tool_calls": None},
        {"role": "user", "content": "  And now?  "},
    ]
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    for prompt in (True, False):
        expected, _ = render_jinja_template(
            conversations=[messages], chat_template=template, add_generation_prompt=prompt, **special
        )
        assert (
            chat_template.render(template, messages, add_generation_prompt=prompt, special_tokens=special)
            == (expected[0])
        )
