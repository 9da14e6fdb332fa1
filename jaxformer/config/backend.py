"""Requested kernels checked against the machine's JAX backend, once, where the config is validated.

`ModelConfig` itself stays a pure description (a config saved on a GPU machine still loads on a
laptop); `check_backend(config)` is called by `experiment.validate` and `models.build`, so a kernel
the backend lacks fails with one line naming the field and the values allowed here, before any
tracing or compilation, instead of as a raw `RuntimeError` from inside `jit`.

The facts are data: which attention kernels each platform provides, and the compute dtypes a
kernel accepts.
"""

from __future__ import annotations

import jax

from jaxformer.config.model import ModelConfig
from jaxformer.errors import ConfigError, DeviceError

# platform -> attention_impl values it runs ("cuda": an NVIDIA GPU, where cuDNN flash attention lives)
ATTENTION_KERNELS: dict[str, tuple[str, ...]] = {
    "cpu": ("reference", "xla"),
    "tpu": ("reference", "xla"),
    "rocm": ("reference", "xla"),
    "cuda": ("reference", "xla", "cudnn"),
}
# attention_impl -> compute dtypes it accepts (absent: any)
KERNEL_DTYPES: dict[str, tuple[str, ...]] = {"cudnn": ("bfloat16", "float16")}


def platform() -> str:
    """This process's default JAX platform: 'cpu', 'tpu', 'cuda' (NVIDIA GPU) or 'rocm' (AMD GPU)."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version else "cuda"


def attention_kernels(on: str) -> tuple[str, ...]:
    """The `attention_impl` values available on platform `on` (unknown platforms: the portable ones)."""
    return ATTENTION_KERNELS.get(on, ("reference", "xla"))


def check_backend(config: ModelConfig, on: str | None = None) -> None:
    """Raise DeviceError if `config.attention_impl` is not available on platform `on` (default: this one);
    ConfigError if the kernel does not accept `config.dtype`."""
    portable = all(config.attention_impl in kernels for kernels in ATTENTION_KERNELS.values())
    if on is None and not portable:  # ask the backend only when the answer matters (it initializes JAX)
        on = platform()
    allowed = attention_kernels(on) if on is not None else ()
    if on is not None and config.attention_impl not in allowed:
        raise DeviceError(
            f"attention_impl={config.attention_impl!r} is not available on this {on} backend; "
            f"choose one of {list(allowed)} here (set model.attention_impl, e.g. --config.model.attention_impl=xla)."
        )
    dtypes = KERNEL_DTYPES.get(config.attention_impl)
    if dtypes is not None and config.dtype not in dtypes:
        raise ConfigError(
            f"attention_impl={config.attention_impl!r} needs a compute dtype in {list(dtypes)}, got "
            f"dtype={config.dtype!r}; set model.dtype=bfloat16 or choose attention_impl='xla'."
        )
