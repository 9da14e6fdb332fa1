"""jaxformer: Transformers in JAX/Flax — modules, training, sharding, checkpoints, Hub interop."""

__version__ = "0.1.0"
