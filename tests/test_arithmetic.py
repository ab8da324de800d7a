"""Layer arithmetic against the article's numbers and against the real layers' output shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit import CnnkitError, layers
from cnnkit.core import arithmetic


def test_article_parameter_counts():
    assert arithmetic.conv_params(5, 5, in_ch=1, out_ch=3) == 78  # (5x5+1)x3
    assert arithmetic.dense_params(784, 15, bias=False) == 11_760  # 784 x 15 weights
    assert arithmetic.dense_params(3 * 28 * 28, 15, bias=False) == 2_352 * 15
    assert arithmetic.conv_params(3, 3, in_ch=1, out_ch=10) == 100  # the digits network's conv1
    assert arithmetic.batchnorm_params(5) == 10
    assert arithmetic.batchnorm_params(5, per="neuron", spatial=(4, 4)) == 2 * 4 * 4 * 5


def test_parameter_counts_equal_torch_modules():
    conv = layers.Conv2d(6, 12, (3, 5), groups=3, bias=True)
    assert arithmetic.conv_params(3, 5, 6, 12, groups=3) == sum(p.numel() for p in conv.parameters())
    assert arithmetic.dense_params(20, 50) == sum(p.numel() for p in layers.Dense(20, 50).parameters())


def test_macs_by_hand():
    # conv1 of the digits network: 8x8 output, 10 maps, 3x3x1 kernel -> 64 * 10 * 9 multiply-adds.
    assert arithmetic.conv_macs(3, 3, 1, 10, 8, 8) == 5_760
    assert arithmetic.dense_macs(20, 50) == 1_000
    assert arithmetic.pool_ops(3, 3, 5, 2, 2) == 180
    assert arithmetic.lrn_ops(5, 96, 55, 55) == 5 * 96 * 55 * 55


def test_same_padding_values():
    assert arithmetic.same_padding(5, 2, 2) == (0, 1)  # extra cell after
    assert arithmetic.same_padding(4, 3, 2) == (0, 1)
    assert arithmetic.same_padding(5, 3, 2) == (1, 1)
    assert arithmetic.same_padding(8, 3, 1) == (1, 1)
    assert arithmetic.same_padding(3, 7, 1) == (3, 3)
    assert arithmetic.same_padding(224, 7, 2) == (2, 3)


def test_output_size_errors():
    with pytest.raises(CnnkitError, match="larger than the VALID input size 2"):
        arithmetic.output_size(2, 3, padding="valid")
    with pytest.raises(CnnkitError, match="received padding='full'"):
        arithmetic.output_size(8, 3, padding="full")


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 20), kernel=st.integers(1, 5), stride=st.integers(1, 4), dilation=st.integers(1, 3),
       padding=st.sampled_from(["same", "valid", 0, 1, 2]), static=st.booleans())
def test_output_size_equals_real_conv_shape(size, kernel, stride, dilation, padding, static):
    extent = (kernel - 1) * dilation + 1
    pad = 0 if isinstance(padding, str) else padding
    if padding != "same" and size + 2 * pad < extent:
        with pytest.raises(CnnkitError):
            arithmetic.output_size(size, kernel, stride, padding, dilation)
        return
    conv = layers.Conv2d(1, 1, kernel, stride, padding, dilation, input_size=(size, size + 1) if static else None)
    out = conv(torch.zeros(1, 1, size, size + 1))
    assert out.shape[2] == arithmetic.output_size(size, kernel, stride, padding, dilation)
    assert out.shape[3] == arithmetic.output_size(size + 1, kernel, stride, padding, dilation)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 20), kernel=st.integers(1, 5), stride=st.integers(1, 4),
       padding=st.sampled_from(["same", "valid"]), kind=st.sampled_from(["max", "avg"]))
def test_output_size_equals_real_pool_shape(size, kernel, stride, padding, kind):
    if padding == "valid" and size < kernel:
        return
    pool = (layers.MaxPool2d if kind == "max" else layers.AvgPool2d)(kernel, stride, padding)
    assert pool(torch.zeros(1, 2, size, size)).shape[2] == arithmetic.output_size(size, kernel, stride, padding)
