"""LoRA under jit sharding: adapters placed by their logical axes (from the base kernels) on a
(data 1, fsdp 2, tensor 2) mesh of fake CPU devices give the single-device logits."""

from __future__ import annotations

import json

from support.fake_devices import launch

WORKER = r"""
import json
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from jaxformer import models, presets, sharding
from jaxformer.config import LoraConfig
from jaxformer.experiment import DEFAULT_RULES
from jaxformer.models import lora as L

config = presets.get("tiny-gpt2", scan_layers=True, d_model=32, num_heads=4, d_ff=48, vocab_size=96)
boxed = models.abstract_params(config)
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32), nn.meta.unbox(boxed))
lora = LoraConfig(rank=4, targets=("query", "key", "value", "out", "up", "down"))
adapters = L.init_lora(lora, params, jax.random.PRNGKey(0))
adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), jnp.float32), adapters)
ids = jnp.asarray(rng.integers(1, 96, (4, 8)), jnp.int32)
model = models.build(config)
forward = lambda p, a: L.apply(model, p, a, lora, ids)
reference = np.asarray(jax.jit(forward)(params, adapters))
mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 2})
param_sh = sharding.param_shardings(boxed, mesh, DEFAULT_RULES)
lora_sh = sharding.param_shardings(L.box(adapters, L.lora_logical_axes(lora, boxed)), mesh, DEFAULT_RULES)
with sharding.mesh_context(mesh, DEFAULT_RULES):
    p, a = jax.device_put(params, param_sh), jax.device_put(adapters, lora_sh)
    out = np.asarray(jax.jit(forward)(p, a))
    grads = jax.jit(jax.grad(lambda a: forward(p, a).sum()))(a)
q = a["decoder"]["layers"]["self_attention"]["query_kernel"]
print("RESULT " + json.dumps({
    "diff": float(np.abs(out - reference).max()),
    "scale": float(np.abs(reference).max()),
    "a_spec": str(q["lora_a"].sharding.spec),
    "b_spec": str(q["lora_b"].sharding.spec),
    "devices": len(q["lora_b"].sharding.device_set),
    "grads_finite": bool(all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))),
}), flush=True)
"""


def test_sharded_adapters_give_the_single_device_logits():
    proc = launch(["-c", WORKER], devices=4)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["diff"] < 1e-5 and result["scale"] > 1e-2, result
    assert "fsdp" in result["a_spec"] and "tensor" in result["b_spec"], result  # A [L, D, r], B [L, r, N, H]
    assert result["devices"] == 4 and result["grads_finite"]
