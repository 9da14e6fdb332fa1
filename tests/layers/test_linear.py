"""`layers.linear.project` against the einsum it replaces (NumPy, float64) and its gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers.linear import project


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape"),
    [((3, 5, 7), (7, 11)), ((2, 3, 5, 7), (7, 4, 3)), ((1, 1, 6), (6, 9)), ((4, 6), (6, 2, 5))],
)
def test_project_equals_numpy_einsum_and_its_gradients(x_shape, kernel_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    kernel = rng.standard_normal(kernel_shape).astype(np.float32)
    flat_out = kernel.reshape(kernel_shape[0], -1).astype(np.float64)
    expected = (x.reshape(-1, x_shape[-1]).astype(np.float64) @ flat_out).reshape(*x_shape[:-1], *kernel_shape[1:])
    got = project(jnp.asarray(x), jnp.asarray(kernel))
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)

    # d/dx and d/dkernel of sum(project * g): g kernel^T and x^T g, as NumPy writes them.
    g = rng.standard_normal(expected.shape).astype(np.float32)
    grad_x, grad_k = jax.grad(lambda a, b: jnp.sum(project(a, b) * g), argnums=(0, 1))(x, kernel)
    g2 = g.reshape(-1, flat_out.shape[1]).astype(np.float64)
    x2 = x.reshape(-1, x_shape[-1]).astype(np.float64)
    np.testing.assert_allclose(np.asarray(grad_x), (g2 @ flat_out.T).reshape(x_shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_k), (x2.T @ g2).reshape(kernel_shape), rtol=1e-5, atol=1e-5)


def test_project_refuses_a_kernel_of_another_width():
    with pytest.raises(ValueError, match="7 features but the kernel expects 6"):
        project(jnp.zeros((2, 7)), jnp.zeros((6, 3)))
