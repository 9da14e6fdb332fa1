"""Runs in a subprocess with 8 fake CPU devices: `hf.load(DIR, mesh=...)` against a plain load.

    python tests/support/sharded_load_worker.py MODEL_DIR

Loads MODEL_DIR plainly, then onto fsdp=8 and data=2 x fsdp=2 x tensor=2 meshes (mesh=) and once with
explicit shardings=. Prints one line `RESULT {json}`: per layout and parameter, the max |difference|
to the plain load, its PartitionSpec, whether it equals the sharding the training runtime derives
(sharding.param_shardings under DEFAULT_RULES), and device 0's shard shape.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

LAYOUTS = {
    "fsdp=8": {"data": 1, "fsdp": 8, "tensor": 1},
    "data=2 x fsdp=2 x tensor=2": {"data": 2, "fsdp": 2, "tensor": 2},
}


def main(directory: str) -> dict[str, Any]:
    import jax

    from jaxformer import hf, models, sharding
    from jaxformer.experiment import DEFAULT_RULES
    from jaxformer.hf.convert import flat_params

    assert jax.device_count() == 8, jax.devices()
    _, plain, config = hf.load(directory)
    plain_flat = flat_params(plain)
    result: dict[str, Any] = {"shapes": {k: list(v.shape) for k, v in plain_flat.items()}}
    for name, sizes in LAYOUTS.items():
        mesh = sharding.make_mesh(sizes)
        expected = flat_params(sharding.param_shardings(models.abstract_params(config), mesh, DEFAULT_RULES))
        for how in ("mesh", "shardings"):
            if how == "mesh":
                _, params, loaded_config = hf.load(directory, mesh=mesh)
            else:
                tree = sharding.param_shardings(models.abstract_params(config), mesh, DEFAULT_RULES)
                _, params, loaded_config = hf.load(directory, shardings=tree)
            assert loaded_config == config
            report = {}
            for path, array in flat_params(params).items():
                report[path] = {
                    "diff": float(
                        np.max(np.abs(np.asarray(array, np.float32) - np.asarray(plain_flat[path], np.float32)))
                    ),
                    "spec": [None if a is None else a if isinstance(a, str) else list(a) for a in array.sharding.spec],
                    "expected": array.sharding == expected[path],
                    "shard": list(array.addressable_shards[0].data.shape),
                    "devices": len(array.sharding.device_set),
                    "dtype": str(array.dtype),
                }
            result[f"{name} {how}"] = report
    try:
        hf.load(directory, shardings={"embed": {}})
        result["bad shardings"] = "no error"
    except ValueError as err:
        result["bad shardings"] = str(err)
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])), flush=True)
