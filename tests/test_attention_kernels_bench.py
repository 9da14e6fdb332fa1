"""benchmarks/attention_kernels.py (the GPU script's cuDNN check) runs here on its quick shape."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.paths import REPO_ROOT

from benchmarks import attention_kernels


def test_every_kernel_of_this_backend_matches_the_fp32_reference_in_bf16() -> None:
    result = attention_kernels.main(["--quick"])
    kernels = {row["kernel"] for row in result["cases"]}
    assert kernels == {"reference", "xla"} and len(result["cases"]) == 4
    for row in result["cases"]:
        assert "error" not in row, row
        assert row["relative_error"] < 2e-2, row  # bfloat16 inputs and outputs: ~3 significant digits
        assert row["median_ms"] > 0


def test_gpu_script_is_valid_bash() -> None:
    script = Path(REPO_ROOT) / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
