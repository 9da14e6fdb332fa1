"""The benchmarks (compare, scaling, profile_step, profile_decode, beam_speed, sampling_speed) still run, on tiny shapes.

Numbers on tiny shapes mean nothing; these tests check the structure the reports rely on:
ratio keys, positive finite timings, MFU in (0, 1], equal first losses on the same weights.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


from benchmarks import beam_speed, compare, load_speed, profile_decode, profile_step, sampling_speed, scaling

TINY = {"layers": 2, "width": 32, "heads": 4, "length": 16, "batch": 2, "vocab": 97}


def positive(x: float) -> bool:
    return isinstance(x, float | int) and math.isfinite(x) and x > 0


@pytest.mark.slow  # ~23 s: trains and decodes on both sides
def test_compare_reports_ratios_for_training_and_decoding():
    results = compare.run(
        dict(TINY), repeats=1, new_tokens=4, batches=[1], parts=["train", "decode"], probe_size=128, dtypes=("float32",)
    )
    assert set(results["ratios"]) == {"train fp32", "decode b1"}
    assert all(positive(v) for v in results["ratios"].values()) and results["finite"]
    for row in results["training"]:
        for side in ("jaxformer", "transformers"):
            assert positive(row[side]["step_s"]) and positive(row[side]["tokens_per_s"])
            assert 0.0 < row[side]["mfu"] <= 1.0
        if row["dtype"] == "float32":  # same weights, same batch, same loss before the first update
            assert row["first_loss"]["jaxformer"] == pytest.approx(row["first_loss"]["transformers"], abs=1e-4)
    for row in results["decoding"]:
        assert positive(row["jaxformer"]["new_tokens_per_s"]) and positive(row["transformers"]["new_tokens_per_s"])
        assert row["same_tokens"] == 1.0  # greedy, same weights, fp32
    assert all(positive(p) for peaks in results["matmul_peak_flops"].values() for p in peaks.values())


@pytest.mark.slow  # ~8 s: decodes on both sides
def test_compare_decodes_prompts_of_the_requested_length():
    rows = compare.compare_decoding(dict(TINY), batches=[2], new_tokens=3, repeats=1, prompt_len=11)
    assert [(row["batch"], row["prompt_len"], row["new_tokens"]) for row in rows] == [(2, 11, 3)]
    assert rows[0]["same_tokens"] == 1.0  # greedy, same weights, fp32, the longer prompt on both sides


@pytest.mark.slow  # over 20 s on 2 cores; run in the full suite (-m slow)
def test_sampling_speed_times_every_setting_on_both_sides(capsys):
    results = sampling_speed.run(dict(TINY), batches=[2], new_tokens=4, repeats=1)
    assert [row["setting"] for row in results["rows"]] == list(sampling_speed.SETTINGS)
    for row in results["rows"]:
        assert row["sampling"] == sampling_speed.SETTINGS[row["setting"]]
        assert (
            positive(row["ratio"])
            and positive(row["jaxformer"]["seconds"])
            and positive(row["transformers"]["seconds"])
        )
        assert (row["same_tokens"] == 1.0) if row["sampling"] is None else row["same_tokens"] is None
    sampling_speed.print_report(results)
    assert "top-p 0.9" in capsys.readouterr().out


def test_gpt2_124m_shape_is_gpt2_small_and_cpu_runs_keep_the_default_attention():
    """The accelerator comparison's shape holds GPT-2 small's 124,439,808 parameters (tied head, 1024
    positions); off a GPU neither side changes device or attention kernel."""
    import jax

    from benchmarks import common
    from jaxformer import models

    config = common.bench_config(**compare.model_shape(compare.SHAPES["gpt2-124m"]))
    assert models.param_count(config) == 124_439_808
    if jax.default_backend() == "cpu":
        assert compare.attention_changes("bfloat16") == {} and common.torch_device() == "cpu"
        assert common.torch_thread_counts()[0] >= 1


@pytest.mark.slow  # ~10 s; a benchmark's smoke run
def test_scaling_measures_compile_and_step_time():
    row = scaling.measure(1, True, vocab=97, steps=1, width=32, heads=4, length=16, batch=2)
    assert row["layers"] == 1 and row["scan_layers"] is True
    for key in ("trace_lower_s", "xla_compile_s", "compile_s", "step_s", "peak_memory_mib"):
        assert positive(row[key]), key
    deeper = dict(row, layers=4, compile_s=row["compile_s"] * 1.2)
    summary = scaling.summarize([deeper, row])
    assert summary["compile_ratio_scanned"] == pytest.approx(1.2, rel=1e-2)
    assert summary["compile_ratio_scanned_layers"] == [1, 4] and summary["scanned_within_limit"] is True


@pytest.mark.slow  # ~10 s; a benchmark's smoke run
def test_profile_attributes_time_to_model_parts():
    result = profile_step.profile_train_step(vocab=97, layers=1, steps=1, width=32, heads=4, length=16, batch=2)
    assert positive(result["ops_ms_per_step"]) and result["ops"]
    assert {"LM head (tied logits)", "loss + accuracy"} <= set(result["parts"])
    # Each kind and the total are rounded to 0.1 ms: their sum may differ by half a step per term.
    rounding = 0.05 * (len(result["kinds"]) + 1)
    assert sum(result["kinds"].values()) == pytest.approx(result["ops_ms_per_step"], rel=1e-2, abs=rounding)


@pytest.mark.slow  # ~10 s; a benchmark's smoke run
def test_decode_profile_finds_the_head_matmul():
    result = profile_decode.profile_generate(batch=1, new_tokens=4, vocab=97, layers=1, width=32, heads=4)
    assert positive(result["ms_per_token"]) and positive(result["traced_ops_ms_per_token"])
    assert any("lm_head" in op["op_name"] or op["shape"].startswith("f32[97") for op in result["ops"])
    assert all(op["us_per_token"] >= 0 for op in result["ops"])


@pytest.mark.slow  # over 20 s on 2 cores; run in the full suite (-m slow)
def test_beam_speed_times_both_searches():
    result = beam_speed.measure(batch=2, source_len=5, new_tokens=4, beams=3, repeats=1, d_model=32, d_ff=64)
    assert positive(result["greedy_s"]) and positive(result["beam_s"])
    assert result["beam1_equals_greedy"] is True


@pytest.mark.slow  # ~11 s
def test_load_speed_loads_the_whole_checkpoint_on_both_sides(capsys):
    results = load_speed.run(size_mb=2, repeats=1)
    size = results["checkpoint"]["bytes"]
    assert size > 1e6 and results["checkpoint"]["shards"] > 1
    for side in ("jaxformer", "transformers"):
        summary = results[side]
        assert positive(summary["seconds"]) and positive(summary["seconds_per_gb"])
        assert summary["peak_added_bytes"] > 0 and positive(summary["peak_rss_over_checkpoint"])
        assert summary["runs"][0]["param_bytes"] == size
    run = results["jaxformer"]["runs"][0]
    assert run["devices"] == 8 and run["split_params"] >= run["params"] - 4  # only 1-D norm scales may stay whole
    assert run["device0_bytes"] * 8 < 1.5 * size  # each device holds about its eighth
    load_speed.print_report(results)
    assert "s/GB" in capsys.readouterr().out


def test_steal_meter_is_the_stolen_share_of_the_ticks_in_between(monkeypatch):
    from benchmarks.common import StealMeter

    reads = iter([(10, 1000), (30, 2000)])  # (steal ticks, all ticks) at start and at the end
    monkeypatch.setattr(StealMeter, "_read", staticmethod(lambda: next(reads)))
    assert StealMeter().percent() == 2.0  # 20 of 1000 ticks
    monkeypatch.setattr(StealMeter, "_read", staticmethod(lambda: None))  # no /proc/stat
    assert StealMeter().percent() is None
    real = StealMeter()  # this machine's /proc/stat, if it has one
    assert real.percent() is None or 0.0 <= real.percent() <= 100.0
