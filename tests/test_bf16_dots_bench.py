"""benchmarks/bf16_dots.py on a tiny shape: every path compiles (or records why not), the HLO
parser resolves the dots' operand types, and the products are right for their precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


from benchmarks import bf16_dots


def test_operand_types_are_read_from_the_optimized_hlo():
    a, b = jnp.ones((8, 4), jnp.float32), jnp.ones((4, 6), jnp.float32)
    text = jax.jit(jnp.dot).lower(a, b).compile().as_text()
    assert bf16_dots.dot_operand_types(text) == ["f32,f32"]
    # an int8 product keeps its s8 operands whatever the CPU path does with floats
    text = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.int32)).lower(
        a.astype(jnp.int8), b.astype(jnp.int8)
    )
    assert bf16_dots.dot_operand_types(text.compile().as_text()) == ["s8,s8"]


def test_every_path_and_precision_reports_a_checked_product():
    results = bf16_dots.run([(64, 48, 40)], repeats=1)
    rows = results["shapes"]["64x48x40"]
    assert set(rows["jax"]) == set(bf16_dots.PATHS) and set(rows["torch"]) == {"fp32", "bf16"}
    default = rows["jax"]["default"]
    assert "error" not in default["fp32"], "the default path always compiles"
    for path, by_precision in rows["jax"].items():
        for precision, row in by_precision.items():
            if "error" in row:
                continue
            assert row["gflops"] > 0 and row["dot_operands"] and "?" not in ",".join(row["dot_operands"]), (path, row)
            tolerance = 1e-5 if precision == "fp32" else 1e-2  # bf16 rounds the result (or not, with an f32 result)
            assert row["relative_error"] < tolerance, (path, precision, row)
            if precision == "fp32":
                assert row["dot_operands"] == ["f32,f32"]
