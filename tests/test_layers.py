"""cnnkit.layers against cnnkit.tf's TF semantics, the NumPy reference, PyTorch modules and hand arithmetic."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import CnnkitError, layers, tf
from tests import tf_reference as ref

NHWC, NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


@pytest.mark.parametrize("size,k,s,d", [(8, 3, 2, 1), (7, 3, 2, 1), (9, 4, 3, 1), (8, 2, 1, 1), (10, 3, 2, 2)])
def test_conv2d_same_equals_tf_static_and_dynamic(size, k, s, d):
    dynamic = layers.Conv2d(3, 4, k, stride=s, padding="same", dilation=d)
    static = layers.Conv2d(3, 4, k, stride=s, padding="same", dilation=d, input_size=size)
    static.load_state_dict(dynamic.state_dict())
    x = torch.randn(2, 3, size, size)
    expected = tf.conv2d(x.permute(NHWC), dynamic.weight.permute(2, 3, 1, 0), s, "SAME", dilations=d)
    expected = (expected + dynamic.bias).permute(NCHW)
    torch.testing.assert_close(dynamic(x), expected)
    torch.testing.assert_close(static(x), expected)
    assert not static.dynamic_same


def test_conv2d_rectangular_and_valid():
    conv = layers.Conv2d(2, 3, (3, 1), stride=(2, 1), padding="valid")
    x = torch.randn(1, 2, 9, 5)
    expected = tf.conv2d(x.permute(NHWC), conv.weight.permute(2, 3, 1, 0), [2, 1], "VALID").permute(NCHW)
    torch.testing.assert_close(conv(x), expected + conv.bias[:, None, None])
    assert conv(x).shape == (1, 3, 4, 5)
    with pytest.raises(CnnkitError, match=r"larger than the VALID input size 2 \(input 2x5\)"):
        conv(torch.randn(1, 2, 2, 5))


def test_conv2d_int_padding_is_torch():
    ours, theirs = layers.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(ours(x), theirs(x))


def test_conv2d_bad_padding_names_value():
    with pytest.raises(CnnkitError, match="received padding='full'"):
        layers.Conv2d(1, 1, 3, padding="full")
    with pytest.raises(CnnkitError, match="received kernel_size=0"):
        layers.Conv2d(1, 1, 0)


@pytest.mark.parametrize("cls,kind", [(layers.MaxPool2d, "max"), (layers.AvgPool2d, "avg")])
@pytest.mark.parametrize("size,k,s,padding", [(8, 3, 2, "same"), (7, 2, 2, "same"), (9, 3, 1, "same"),
                                              (8, 3, 2, "valid"), (5, 2, None, "valid")])
def test_pools_match_reference(cls, kind, size, k, s, padding):
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    expected = ref.pool_nhwc(x.permute(NHWC).numpy(), (k, k), (s or k, s or k), padding.upper(), kind)
    for layer in (cls(k, s, padding), cls(k, s, padding, input_size=size)):
        np.testing.assert_allclose(layer(x).permute(NHWC).numpy(), expected, rtol=1e-12)


def test_avg_pool_int_padding_is_torch_and_global_pool():
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(layers.AvgPool2d(3, 2, 1)(x), nn.AvgPool2d(3, 2, 1)(x))
    torch.testing.assert_close(layers.MaxPool2d(3, 2, 1)(x), nn.MaxPool2d(3, 2, 1)(x))
    assert layers.GlobalAvgPool2d()(x).shape == (2, 3)
    torch.testing.assert_close(layers.GlobalAvgPool2d(keepdim=True)(x), nn.AdaptiveAvgPool2d(1)(x))


def test_batchnorm_feature_map_matches_torch():
    ours, theirs = layers.BatchNorm2d(4, eps=1e-3, momentum=0.1), nn.BatchNorm2d(4, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    theirs.load_state_dict(ours.state_dict())
    for _ in range(3):
        x = torch.randn(5, 4, 3, 3) * 2 + 1
        torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(ours(x), theirs(x))


def test_batchnorm_per_neuron_by_hand():
    bn = layers.BatchNorm2d(2, per="neuron", spatial=(3, 3), eps=1e-3, momentum=None)
    assert sum(p.numel() for p in bn.parameters()) == 2 * 2 * 3 * 3  # 2 x W x H x C, the article's count
    x = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    bn = bn.double()
    a = x.numpy()
    expected = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-3)  # statistics over the batch only, per position
    np.testing.assert_allclose(bn(x).detach().numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean.numpy(), a.mean(0), rtol=1e-10)  # cumulative average of 1 batch
    np.testing.assert_allclose(bn.running_var.numpy(), a.var(0, ddof=1), rtol=1e-10)


def test_batchnorm_refuses_batches_without_variance():
    with pytest.raises(CnnkitError, match="cannot take a variance"):
        layers.BatchNorm2d(3)(torch.randn(1, 3, 1, 1))
    with pytest.raises(CnnkitError, match="cannot take a variance"):
        layers.BatchNorm2d(3, per="neuron", spatial=4)(torch.randn(1, 3, 4, 4))
    bn = layers.BatchNorm2d(3).eval()
    assert bn(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)  # population statistics need no batch
    with pytest.raises(CnnkitError, match="expects"):
        layers.BatchNorm2d(3)(torch.randn(2, 4, 5, 5))


def test_recompute_batchnorm_stats_is_average_of_batch_moments():
    model = nn.Sequential(layers.Conv2d(1, 2, 3), layers.BatchNorm2d(2), nn.ReLU(), layers.BatchNorm2d(2))
    batches = [torch.randn(4, 1, 5, 5) + i for i in range(3)]
    assert layers.recompute_batchnorm_stats(model, [(b, None) for b in batches]) == 3
    conv, bn1 = model[0], model[1]
    with torch.no_grad():
        feats = [conv(b) for b in batches]
    means = [f.mean(dim=(0, 2, 3)) for f in feats]
    variances = [f.var(dim=(0, 2, 3), unbiased=False) for f in feats]
    torch.testing.assert_close(bn1.running_mean, sum(means) / 3)
    torch.testing.assert_close(bn1.running_var, sum(variances) / 3)
    assert model.training  # mode restored
    layers.recompute_batchnorm_stats(model, batches, unbiased=True)
    n = 4 * 5 * 5
    torch.testing.assert_close(bn1.running_var, sum(variances) / 3 * n / (n - 1))


def test_lrn_formula_and_converters():
    x = torch.rand(2, 7, 3, 3, dtype=torch.float64) * 3
    lrn = layers.LocalResponseNorm(size=5, alpha=1e-2, beta=0.75, k=2.0)
    expected = ref.lrn_nchw(x.numpy(), 5, 1e-2, 0.75, 2.0)
    np.testing.assert_allclose(lrn(x).numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(lrn.to_torch()(x), lrn(x))
    torch.testing.assert_close(tf.local_response_normalization(x.permute(NHWC), **lrn.to_tf()).permute(NCHW), lrn(x))
    back = layers.LocalResponseNorm.from_torch(nn.LocalResponseNorm(3, alpha=3e-3, beta=0.5, k=1.0))
    assert (back.size, back.alpha, back.beta, back.k) == (3, pytest.approx(1e-3), 0.5, 1.0)
    from_tf = layers.LocalResponseNorm.from_tf(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    assert (from_tf.size, from_tf.alpha, from_tf.k) == (5, 1e-4, 2.0)
    with pytest.raises(CnnkitError, match="odd"):
        layers.LocalResponseNorm(size=4)


def test_split_uneven_grid_and_branches():
    x = torch.arange(7 * 5, dtype=torch.float32).reshape(1, 1, 7, 5)
    regions = layers.Split((2, 2))(x)
    assert [tuple(r.shape[2:]) for r in regions] == [(4, 3), (4, 2), (3, 3), (3, 2)]
    assert regions[3][0, 0, 0, 0].item() == x[0, 0, 4, 3].item()
    branches = layers.Branches([layers.GlobalAvgPool2d() for _ in regions])
    outs = branches(regions)
    torch.testing.assert_close(outs[2], x[:, :, 4:, :3].mean(dim=(2, 3)))
    with pytest.raises(CnnkitError, match="3 inputs"):
        branches(regions[:3])
    with pytest.raises(CnnkitError, match="non-empty"):
        layers.Split((3, 1))(torch.zeros(1, 1, 2, 2))


def test_fuse_modes():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert layers.Fuse("concat")([a, b]).shape == (2, 6, 4, 4)
    torch.testing.assert_close(layers.Fuse("add")([a, b]), a + b)
    torch.testing.assert_close(layers.Fuse("sub")([a, b]), a - b)
    torch.testing.assert_close(layers.Fuse("mul")([a, b]), a * b)
    torch.testing.assert_close(layers.Fuse("max")([a, b]), torch.maximum(a, b))
    conv = layers.Fuse("conv", in_channels=6, out_channels=2)
    torch.testing.assert_close(conv([a, b]), conv.conv(torch.cat([a, b], 1)))
    with pytest.raises(CnnkitError, match=r"branch 1 has shape \(2, 3, 5, 5\)"):
        layers.Fuse("add")([a, torch.randn(2, 3, 5, 5)])
    with pytest.raises(CnnkitError, match="received mode='avg'"):
        layers.Fuse("avg")


def test_input_flatten_dense_softmax():
    nhwc = torch.randn(2, 8, 8, 1)
    x = layers.Input((8, 8, 1), data_format="NHWC")(nhwc)
    assert x.shape == (2, 1, 8, 8)
    torch.testing.assert_close(x[:, 0], nhwc[..., 0])
    with pytest.raises(CnnkitError, match=r"received shape \(8, 8, 1\)"):
        layers.Input((8, 8, 1), data_format="NHWC")(torch.randn(8, 8, 1))
    with pytest.raises(CnnkitError, match="uint8"):
        layers.Input((1, 8, 8))(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(CnnkitError, match=r"\(N, 1, 8, 8\)"):
        layers.Input((1, 8, 8))(torch.zeros(2, 8, 8, 1))
    feats = torch.randn(2, 5, 2, 2)
    # NHWC flatten order equals TF's reshape of the NHWC tensor, so TF-trained dense weights apply directly.
    torch.testing.assert_close(layers.Flatten("NHWC")(feats), feats.permute(NHWC).reshape(2, -1))
    torch.testing.assert_close(layers.Flatten()(feats), feats.reshape(2, -1))
    dense = layers.Dense(20, 10)
    assert sum(p.numel() for p in dense.parameters()) == 20 * 10 + 10
    probs = layers.SoftmaxOutput()(torch.randn(3, 10))
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_static_same_layer_pads_other_sizes_correctly():
    conv = layers.Conv2d(1, 1, 3, stride=2, input_size=8)
    dynamic = layers.Conv2d(1, 1, 3, stride=2)
    dynamic.load_state_dict(conv.state_dict())
    for size in (8, 7, 9):
        x = torch.randn(1, 1, size, size)
        torch.testing.assert_close(conv(x), dynamic(x))
