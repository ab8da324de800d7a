"""cnnkit.tf against hand calculations, a NumPy loop reference, PyTorch ops, and gradcheck."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit import CnnkitError, tf
from tests import tf_reference as ref

GRID = torch.arange(1, 26, dtype=torch.float64).reshape(1, 5, 5, 1)  # rows 1..5, 6..10, ... (NHWC)


def test_conv2d_5x5_same_stride2_by_hand():
    # 3x3 ones, stride 2: out = ceil(5/2) = 3, total pad 2 -> one row/column each side.
    out = tf.conv2d(GRID, torch.ones(3, 3, 1, 1, dtype=torch.float64), strides=[1, 2, 2, 1], padding="SAME")
    expected = [[16, 33, 28], [69, 117, 87], [76, 123, 88]]
    assert out[0, :, :, 0].tolist() == expected


def test_conv2d_5x5_same_stride2_asymmetric_by_hand():
    # 2x2 ones, stride 2: total pad 1 goes entirely to the bottom/right (TF), not the top/left.
    out = tf.conv2d(GRID, torch.ones(2, 2, 1, 1, dtype=torch.float64), strides=2, padding="SAME")
    assert out[0, :, :, 0].tolist() == [[16, 24, 15], [56, 64, 35], [43, 47, 25]]


def test_pools_5x5_same_stride2_by_hand():
    mx = tf.max_pool(GRID, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME")
    assert mx[0, :, :, 0].tolist() == [[7, 9, 10], [17, 19, 20], [22, 24, 25]]
    # Windows hold 4 (corner), 6 (edge) or 9 real cells: sums 16, 33, ... divided by those counts.
    av = tf.avg_pool(GRID, ksize=3, strides=2, padding="SAME")
    assert av[0, :, :, 0].tolist() == [[4, 5.5, 7], [11.5, 13, 14.5], [19, 20.5, 22]]
    av2 = tf.avg_pool(GRID, ksize=2, strides=2, padding="SAME")
    assert av2[0, :, :, 0].tolist() == [[4, 6, 7.5], [14, 16, 17.5], [21.5, 23.5, 25]]


def test_max_pool_never_picks_padding():
    x = -torch.rand(2, 5, 5, 3) - 1.0  # all values below -1: a zero pad would win every edge window
    out = tf.max_pool(x, 3, 2, "SAME")
    assert (out < -1).all()


def test_valid_output_sizes():
    x = torch.randn(1, 7, 6, 1)
    assert tf.conv2d(x, torch.randn(3, 2, 1, 4), 2, "VALID").shape == (1, 3, 3, 4)  # ceil(5/2), ceil(5/2)
    assert tf.max_pool(x, 3, 3, "VALID").shape == (1, 2, 2, 1)  # ceil(5/3), ceil(4/3)


@pytest.mark.parametrize("size,k,s,d,padding", [
    ((7, 6), (3, 3), (2, 2), (1, 1), "SAME"), ((8, 8), (3, 3), (1, 1), (1, 1), "SAME"),
    ((6, 9), (2, 4), (3, 2), (1, 1), "SAME"), ((9, 9), (3, 3), (2, 1), (2, 2), "SAME"),
    ((7, 7), (3, 2), (2, 3), (1, 1), "VALID"), ((5, 5), (5, 5), (1, 1), (1, 1), "SAME"),
])
def test_conv2d_matches_numpy_reference(size, k, s, d, padding):
    rng = np.random.default_rng(0)
    x, f = rng.normal(size=(2, *size, 3)), rng.normal(size=(*k, 3, 4))
    out = tf.conv2d(torch.tensor(x), torch.tensor(f), strides=[1, *s, 1], padding=padding, dilations=[1, *d, 1])
    np.testing.assert_allclose(out.numpy(), ref.conv2d_nhwc(x, f, s, padding, d), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,k,s,padding", [
    ((7, 6), (3, 3), (2, 2), "SAME"), ((8, 8), (2, 2), (2, 2), "SAME"), ((6, 9), (3, 2), (1, 3), "SAME"),
    ((7, 7), (3, 3), (2, 2), "VALID"), ((4, 5), (4, 4), (3, 3), "SAME"),
])
def test_pools_match_numpy_reference(kind, size, k, s, padding):
    x = np.random.default_rng(1).normal(size=(2, *size, 3))
    op = tf.max_pool if kind == "max" else tf.avg_pool
    out = op(torch.tensor(x), ksize=[1, *k, 1], strides=[1, *s, 1], padding=padding)
    np.testing.assert_allclose(out.numpy(), ref.pool_nhwc(x, k, s, padding, kind), rtol=1e-12)


def test_nchw_equals_nhwc():
    x, f = torch.randn(2, 7, 7, 3, dtype=torch.float64), torch.randn(3, 3, 3, 5, dtype=torch.float64)
    to_nchw = (0, 3, 1, 2)
    nhwc = tf.conv2d(x, f, [1, 2, 2, 1], "SAME")
    nchw = tf.conv2d(x.permute(to_nchw), f, [1, 1, 2, 2], "SAME", data_format="NCHW")
    torch.testing.assert_close(nchw, nhwc.permute(to_nchw))
    for op in (tf.max_pool, tf.avg_pool):
        torch.testing.assert_close(op(x.permute(to_nchw), [1, 1, 3, 3], [1, 1, 2, 2], "SAME", data_format="NCHW"),
                                   op(x, 3, 2, "SAME").permute(to_nchw))


def test_stride1_same_odd_kernel_equals_torch_conv():
    x, f = torch.randn(2, 9, 9, 4), torch.randn(5, 5, 4, 6)
    expected = F.conv2d(x.permute(0, 3, 1, 2), f.permute(3, 2, 0, 1), padding=2).permute(0, 2, 3, 1)
    torch.testing.assert_close(tf.conv2d(x, f, 1, "SAME"), expected)


def test_grouped_conv_when_filter_depth_divides_input():
    x, f = torch.randn(1, 6, 6, 4), torch.randn(3, 3, 2, 6)
    expected = F.conv2d(x.permute(0, 3, 1, 2), f.permute(3, 2, 0, 1), padding=1, groups=2).permute(0, 2, 3, 1)
    torch.testing.assert_close(tf.conv2d(x, f, 1, "SAME"), expected)


def test_moments_and_batch_normalization():
    x = torch.randn(8, 4, 4, 5, dtype=torch.float64)
    mean, var = tf.moments(x, axes=[0, 1, 2], keep_dims=True)
    assert mean.shape == (1, 1, 1, 5)
    flat = x.reshape(-1, 5).numpy()
    np.testing.assert_allclose(mean.flatten().numpy(), flat.mean(0))
    np.testing.assert_allclose(var.flatten().numpy(), flat.var(0))  # population variance (ddof=0)
    offset, scale = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
    y = tf.batch_normalization(x, mean, var, offset, scale, 1e-3)
    expected = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3) * scale.numpy() + offset.numpy()
    np.testing.assert_allclose(y.reshape(-1, 5).numpy(), expected, rtol=1e-10)
    plain = tf.batch_normalization(x, mean, var, None, None, 1e-3)
    np.testing.assert_allclose(plain.reshape(-1, 5).numpy(), (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3))
    assert tf.moments(x, [0, 1, 2])[0].shape == (5,)


def test_lrn_matches_formula_and_torch():
    x = torch.randn(2, 4, 4, 7, dtype=torch.float64)
    out = tf.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-1, beta=0.75)
    nchw = x.permute(0, 3, 1, 2).numpy()
    expected = ref.lrn_nchw(nchw, 5, 1e-1, 0.75, 2.0)
    np.testing.assert_allclose(out.permute(0, 3, 1, 2).numpy(), expected, rtol=1e-12)
    torch_lrn = F.local_response_norm(x.permute(0, 3, 1, 2), 5, alpha=5e-1, beta=0.75, k=2.0)
    torch.testing.assert_close(out.permute(0, 3, 1, 2), torch_lrn)


def test_relu_softmax_and_nn_namespace():
    x = torch.tensor([[-1.0, 0.0, 2.0]])
    assert tf.nn.relu(x).tolist() == [[0.0, 0.0, 2.0]]
    p = tf.nn.softmax(torch.tensor([[0.0, float(np.log(3.0))]]))
    torch.testing.assert_close(p, torch.tensor([[0.25, 0.75]]))
    assert tf.nn.conv2d is tf.conv2d and tf.nn.lrn is tf.local_response_normalization


GRADCHECKS = {
    "conv2d_same_s2": lambda x, f: tf.conv2d(x, f, 2, "SAME"),
    "conv2d_valid_dilated": lambda x, f: tf.conv2d(x, f, 1, "VALID", dilations=2),
    "max_pool_same": lambda x, f: tf.max_pool(x, 3, 2, "SAME"),
    "avg_pool_same": lambda x, f: tf.avg_pool(x, 3, 2, "SAME"),
    "lrn": lambda x, f: tf.local_response_normalization(x, 1, 1.0, 0.5, 0.75),
    "bn": lambda x, f: tf.batch_normalization(x, *tf.moments(x, [0, 1, 2]), f[0, 0, 0, :3], f[0, 1, 0, :3], 1e-3),
    "relu_softmax": lambda x, f: tf.softmax(tf.relu(x)),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_gradcheck(name):
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64)
    x = (x + torch.sign(x) * 0.05).requires_grad_()  # keep values off relu's kink
    f = torch.randn(3, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: GRADCHECKS[name](a, b), (x, f))


@pytest.mark.parametrize("call,message", [
    (lambda: tf.conv2d(torch.zeros(1, 4, 4, 1), torch.zeros(3, 3, 1, 1), 1, "same-ish"), "padding"),
    (lambda: tf.conv2d(torch.zeros(1, 2, 2, 1), torch.zeros(3, 3, 1, 1), 1, "VALID"), "larger than the VALID"),
    (lambda: tf.conv2d(torch.zeros(4, 4, 1), torch.zeros(3, 3, 1, 1), 1, "SAME"), "4-D"),
    (lambda: tf.conv2d(torch.zeros(1, 4, 4, 3), torch.zeros(3, 3, 2, 1), 1, "SAME"), "multiple"),
    (lambda: tf.max_pool(torch.zeros(1, 4, 4, 1), [2, 2, 2, 1], 1, "SAME"), "batch and depth"),
    (lambda: tf.avg_pool(torch.zeros(1, 4, 4, 1), 2, 1, "SAME", data_format="HWCN"), "data_format"),
    (lambda: tf.max_pool(torch.zeros(1, 4, 4, 1), [1, 2, 2], 1, "SAME"), "list of 1, 2 or 4"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(CnnkitError, match=message):
        call()


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), padding=st.sampled_from(["SAME", "VALID"]))
def test_tf_ops_agree_with_reference_on_random_geometry(h, w, kh, kw, sh, sw, padding):
    if padding == "VALID" and (kh > h or kw > w):
        return
    rng = np.random.default_rng(h * 100 + w)
    x, f = rng.normal(size=(1, h, w, 2)), rng.normal(size=(kh, kw, 2, 1))
    out = tf.conv2d(torch.tensor(x), torch.tensor(f), [sh, sw], padding)
    np.testing.assert_allclose(out.numpy(), ref.conv2d_nhwc(x, f, (sh, sw), padding), atol=1e-10)
    pooled = tf.avg_pool(torch.tensor(x), [kh, kw], [sh, sw], padding)
    np.testing.assert_allclose(pooled.numpy(), ref.pool_nhwc(x, (kh, kw), (sh, sw), padding, "avg"), atol=1e-12)
