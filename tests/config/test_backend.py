"""Requested kernels are checked against the backend when the config is validated, not inside jit."""

from __future__ import annotations

import jax
import pytest

from jaxformer import experiment, models, presets
from jaxformer.config.backend import ATTENTION_KERNELS, attention_kernels, check_backend, platform
from jaxformer.errors import ConfigError, DeviceError, UserError

SMALL = presets.get("tiny-gpt2")


def test_platform_names_this_backend():
    assert platform() == jax.default_backend() or (jax.default_backend() == "gpu" and platform() in ("cuda", "rocm"))
    assert platform() in ATTENTION_KERNELS


@pytest.mark.parametrize("on", ["cpu", "tpu", "rocm"])
def test_cudnn_is_a_device_error_off_nvidia_gpus(on):
    with pytest.raises(DeviceError) as caught:
        check_backend(SMALL.replace(attention_impl="cudnn", dtype="bfloat16"), on=on)
    message = str(caught.value)
    assert "attention_impl='cudnn'" in message and f"{on} backend" in message
    assert str(list(attention_kernels(on))) in message  # the values allowed here
    assert isinstance(caught.value, UserError) and "\n" not in message


def test_cudnn_on_an_nvidia_gpu_needs_a_half_precision_dtype():
    check_backend(SMALL.replace(attention_impl="cudnn", dtype="bfloat16"), on="cuda")
    check_backend(SMALL.replace(attention_impl="cudnn", dtype="float16"), on="cuda")
    with pytest.raises(ConfigError, match=r"attention_impl='cudnn' needs a compute dtype in \['bfloat16', 'float16'\]"):
        check_backend(SMALL.replace(attention_impl="cudnn", dtype="float32"), on="cuda")


@pytest.mark.parametrize("impl", ["reference", "xla"])
@pytest.mark.parametrize("on", sorted(ATTENTION_KERNELS))
def test_portable_kernels_pass_everywhere(impl, on):
    check_backend(SMALL.replace(attention_impl=impl), on=on)


@pytest.mark.skipif(platform() == "cuda", reason="cuDNN is available on this machine")
def test_experiment_validation_rejects_cudnn_here():
    config = experiment.base_config()
    config.model.preset = "tiny-gpt2"
    config.model.attention_impl = "cudnn"
    with pytest.raises(DeviceError, match="attention_impl='cudnn' is not available"):
        experiment.validate(config)


@pytest.mark.skipif(platform() == "cuda", reason="cuDNN is available on this machine")
def test_building_the_module_rejects_cudnn_here():
    """Library users who skip the experiment file meet the same one line, before any tracing."""
    with pytest.raises(DeviceError, match=r"choose one of \['reference', 'xla'\]"):
        models.build(SMALL.replace(attention_impl="cudnn", dtype="bfloat16"))
