"""torchvision state dicts into cnnkit's zoo. torchvision cannot be installed beside this torch, so the tests write
out torchvision's parameter names and shapes from its source (torchvision/models/resnet.py, vgg.py, alexnet.py,
googlenet.py), fill them with random values, and check that every tensor lands where it computes what it computes
in torchvision: cnnkit's outputs equal a reference forward written here with plain torch.nn.functional ops in
torchvision's structure."""

import pytest
import torch
import torch.nn.functional as F

from cnnkit.cli import main
from cnnkit.interop.torch_state import expand_names, torch_state_model
from cnnkit.models import get_model
from cnnkit.store.checkpoint import model_from_checkpoint

RESNETS = {"resnet18": (False, [2, 2, 2, 2]), "resnet34": (False, [3, 4, 6, 3]), "resnet50": (True, [3, 4, 6, 3]),
           "resnet101": (True, [3, 4, 23, 3]), "resnet152": (True, [3, 8, 36, 3])}
VGG_CFGS = {  # torchvision/models/vgg.py cfgs
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
INCEPTIONS = [  # torchvision/models/googlenet.py: (name, in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
    ("3a", 192, 64, 96, 128, 16, 32, 32), ("3b", 256, 128, 128, 192, 32, 96, 64),
    ("4a", 480, 192, 96, 208, 16, 48, 64), ("4b", 512, 160, 112, 224, 24, 64, 64),
    ("4c", 512, 128, 128, 256, 24, 64, 64), ("4d", 512, 112, 144, 288, 32, 64, 64),
    ("4e", 528, 256, 160, 320, 32, 128, 128), ("5a", 832, 256, 160, 320, 32, 128, 128),
    ("5b", 832, 384, 192, 384, 48, 128, 128),
]
CLASSES = 10


class State(dict):
    """A torchvision-named state dict being written: conv, BN and linear entries with torchvision's shapes."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.device = device
        self.generator = torch.Generator().manual_seed(0)

    def _random(self, *shape: int, scale: float = 1.0, low: float | None = None) -> torch.Tensor:
        if self.device == "meta":
            return torch.empty(shape, device="meta")
        if low is not None:
            return low + torch.rand(shape, generator=self.generator)
        return torch.randn(shape, generator=self.generator) * scale

    def conv(self, name: str, out: int, inp: int, k: int, bias: bool = False) -> None:
        self[f"{name}.weight"] = self._random(out, inp, k, k, scale=(2.0 / (inp * k * k)) ** 0.5)
        if bias:
            self[f"{name}.bias"] = self._random(out, scale=0.1)

    def bn(self, name: str, c: int) -> None:
        self[f"{name}.weight"] = self._random(c, low=0.5)
        self[f"{name}.bias"] = self._random(c, scale=0.1)
        self[f"{name}.running_mean"] = self._random(c, scale=0.1)
        self[f"{name}.running_var"] = self._random(c, low=0.5)
        self[f"{name}.num_batches_tracked"] = torch.tensor(7, device=self.device)

    def linear(self, name: str, out: int, inp: int) -> None:
        self[f"{name}.weight"] = self._random(out, inp, scale=inp ** -0.5)
        self[f"{name}.bias"] = self._random(out, scale=0.1)


def resnet_state(name: str, device: str = "cpu") -> State:
    bottleneck, layers = RESNETS[name]
    expansion, s = 4 if bottleneck else 1, State(device)
    s.conv("conv1", 64, 3, 7)
    s.bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
        for i in range(blocks):
            p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                s.conv(f"{p}.conv1", planes, inplanes, 1)
                s.bn(f"{p}.bn1", planes)
                s.conv(f"{p}.conv2", planes, planes, 3)
                s.bn(f"{p}.bn2", planes)
                s.conv(f"{p}.conv3", planes * 4, planes, 1)
                s.bn(f"{p}.bn3", planes * 4)
            else:
                s.conv(f"{p}.conv1", planes, inplanes, 3)
                s.bn(f"{p}.bn1", planes)
                s.conv(f"{p}.conv2", planes, planes, 3)
                s.bn(f"{p}.bn2", planes)
            if i == 0 and (stride != 1 or inplanes != planes * expansion):
                s.conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                s.bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    s.linear("fc", CLASSES, 512 * expansion)
    return s


def vgg_state(name: str, device: str = "cpu", divide: int = 1, fc: int = 4096) -> State:
    """torchvision's VGG; `divide` and `fc` shrink the depths and the classifier (names unchanged) for speed."""
    s, index, channels = State(device), 0, 3
    for v in VGG_CFGS[name.removesuffix("_bn")]:
        if v == "M":
            index += 1
            continue
        s.conv(f"features.{index}", v // divide, channels, 3, bias=True)
        if name.endswith("_bn"):
            s.bn(f"features.{index + 1}", v // divide)
        index, channels = index + (3 if name.endswith("_bn") else 2), v // divide
    s.linear("classifier.0", fc, 512 // divide * 7 * 7)
    s.linear("classifier.3", fc, fc)
    s.linear("classifier.6", CLASSES, fc)
    return s


def alexnet_state(device: str = "cpu") -> State:
    s = State(device)
    for index, (out, inp, k) in zip((0, 3, 6, 8, 10), ((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3),
                                                        (256, 256, 3)), strict=True):
        s.conv(f"features.{index}", out, inp, k, bias=True)
    s.linear("classifier.1", 4096, 256 * 6 * 6)
    s.linear("classifier.4", 4096, 4096)
    s.linear("classifier.6", CLASSES, 4096)
    return s


def googlenet_state(device: str = "cpu", aux: bool = True) -> State:
    s = State(device)

    def basic(name: str, out: int, inp: int, k: int) -> None:  # BasicConv2d: conv without bias, BN eps 1e-3
        s.conv(f"{name}.conv", out, inp, k)
        s.bn(f"{name}.bn", out)

    basic("conv1", 64, 3, 7)
    basic("conv2", 64, 64, 1)
    basic("conv3", 192, 64, 3)
    for name, inp, c1, r3, c3, r5, c5, proj in INCEPTIONS:
        basic(f"inception{name}.branch1", c1, inp, 1)
        basic(f"inception{name}.branch2.0", r3, inp, 1)
        basic(f"inception{name}.branch2.1", c3, r3, 3)
        basic(f"inception{name}.branch3.0", r5, inp, 1)
        basic(f"inception{name}.branch3.1", c5, r5, 3)  # 3x3, not 5x5: pytorch/vision#906
        basic(f"inception{name}.branch4.1", proj, inp, 1)
    if aux:
        for name, inp in (("aux1", 512), ("aux2", 528)):
            basic(f"{name}.conv", 128, inp, 1)
            s.linear(f"{name}.fc1", 1024, 2048)
            s.linear(f"{name}.fc2", CLASSES, 1024)
    s.linear("fc", CLASSES, 1024)
    return s


# Reference forwards in torchvision's structure (eval mode), from torchvision's source.
def _conv(x, s, p, stride=1, padding=0):
    return F.conv2d(x, s[f"{p}.weight"], s.get(f"{p}.bias"), stride, padding)


def _bn(x, s, p, eps=1e-5):
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        False, 0.0, eps)


def resnet_reference(name, s, x):
    bottleneck, layers = RESNETS[name]
    x = F.max_pool2d(F.relu(_bn(_conv(x, s, "conv1", 2, 3), s, "bn1")), 3, 2, 1)
    for stage, blocks in enumerate(layers, start=1):
        for i in range(blocks):
            p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            if bottleneck:  # torchvision strides in the 3x3 conv (v1.5)
                out = F.relu(_bn(_conv(x, s, f"{p}.conv1"), s, f"{p}.bn1"))
                out = F.relu(_bn(_conv(out, s, f"{p}.conv2", stride, 1), s, f"{p}.bn2"))
                out = _bn(_conv(out, s, f"{p}.conv3"), s, f"{p}.bn3")
            else:
                out = F.relu(_bn(_conv(x, s, f"{p}.conv1", stride, 1), s, f"{p}.bn1"))
                out = _bn(_conv(out, s, f"{p}.conv2", 1, 1), s, f"{p}.bn2")
            identity = x
            if f"{p}.downsample.0.weight" in s:
                identity = _bn(_conv(x, s, f"{p}.downsample.0", stride), s, f"{p}.downsample.1")
            x = F.relu(out + identity)
    return F.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), s["fc.weight"], s["fc.bias"])


def _classifier(x, s, indices):
    a, b, c = (f"classifier.{i}" for i in indices)
    x = F.relu(F.linear(x.flatten(1), s[f"{a}.weight"], s[f"{a}.bias"]))
    x = F.relu(F.linear(x, s[f"{b}.weight"], s[f"{b}.bias"]))
    return F.linear(x, s[f"{c}.weight"], s[f"{c}.bias"])


def vgg_reference(name, s, x):
    index = 0  # the depths come from the state's own shapes
    for v in VGG_CFGS[name.removesuffix("_bn")]:
        if v == "M":
            x, index = F.max_pool2d(x, 2, 2), index + 1
            continue
        x = _conv(x, s, f"features.{index}", 1, 1)
        if name.endswith("_bn"):
            x = _bn(x, s, f"features.{index + 1}")
        x, index = F.relu(x), index + (3 if name.endswith("_bn") else 2)
    return _classifier(F.adaptive_avg_pool2d(x, 7), s, (0, 3, 6))


def alexnet_reference(s, x):
    x = F.max_pool2d(F.relu(_conv(x, s, "features.0", 4, 2)), 3, 2)
    x = F.max_pool2d(F.relu(_conv(x, s, "features.3", 1, 2)), 3, 2)
    for index in (6, 8, 10):
        x = F.relu(_conv(x, s, f"features.{index}", 1, 1))
    return _classifier(F.adaptive_avg_pool2d(F.max_pool2d(x, 3, 2), 6), s, (1, 4, 6))


def googlenet_reference(s, x):
    def basic(x, p, stride=1, padding=0):
        return F.relu(_bn(_conv(x, s, f"{p}.conv", stride, padding), s, f"{p}.bn", eps=1e-3))

    def inception(x, name):
        p = f"inception{name}"
        b1 = basic(x, f"{p}.branch1")
        b2 = basic(basic(x, f"{p}.branch2.0"), f"{p}.branch2.1", padding=1)
        b3 = basic(basic(x, f"{p}.branch3.0"), f"{p}.branch3.1", padding=1)
        b4 = basic(F.max_pool2d(x, 3, 1, 1, ceil_mode=True), f"{p}.branch4.1")
        return torch.cat([b1, b2, b3, b4], 1)

    x = F.max_pool2d(basic(x, "conv1", 2, 3), 3, 2, ceil_mode=True)
    x = F.max_pool2d(basic(basic(x, "conv2"), "conv3", padding=1), 3, 2, ceil_mode=True)
    x = F.max_pool2d(inception(inception(x, "3a"), "3b"), 3, 2, ceil_mode=True)
    for name in ("4a", "4b", "4c", "4d", "4e"):
        x = inception(x, name)
    x = inception(inception(F.max_pool2d(x, 2, 2, ceil_mode=True), "5a"), "5b")
    return F.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), s["fc.weight"], s["fc.bias"])


STATES = {**{name: (lambda d, n=name: resnet_state(n, d)) for name in RESNETS},
          **{name + bn: (lambda d, n=name + bn: vgg_state(n, d)) for name in VGG_CFGS for bn in ("", "_bn")},
          "alexnet_owt": alexnet_state, "googlenet_bn": googlenet_state}
OPTIONS = {"resnet50": {"stride_in_3x3": True}, "resnet101": {"stride_in_3x3": True},
           "resnet152": {"stride_in_3x3": True}, "googlenet_bn": {"torchvision": True}}


@pytest.mark.parametrize("name", list(STATES))
def test_every_torchvision_tensor_has_a_place_of_its_shape(name):
    """All of torchvision's names and shapes for the family, against the model's mapping (no memory: meta)."""
    theirs = STATES[name]("meta")
    with torch.device("meta"):
        model = get_model(name, num_classes=CLASSES, **OPTIONS.get(name, {}))
    ours = model.state_dict()
    names = expand_names(model.torchvision_names(), ours)
    assert set(names) == set(theirs)
    assert set(names.values()) == set(ours)
    for key, tensor in theirs.items():
        assert ours[names[key]].shape == tensor.shape, key


@pytest.mark.parametrize(("name", "state", "options", "size", "reference"), [
    ("resnet18", lambda: resnet_state("resnet18"), {}, 64, lambda s, x: resnet_reference("resnet18", s, x)),
    # VGG at 1/8 depth and a 64-unit classifier (torchvision's names; full shapes are checked above): the
    # placement is the same, the test 100x cheaper
    ("vgg11_bn", lambda: vgg_state("vgg11_bn", divide=8, fc=64), {"width": 8, "fc_width": 64}, 224,
     lambda s, x: vgg_reference("vgg11_bn", s, x)),
    ("alexnet_owt", alexnet_state, {}, 224, alexnet_reference),  # 224: its classifier reads 6x6 maps
    ("googlenet_bn", googlenet_state, {}, 64, googlenet_reference),
])
def test_torchvision_weights_compute_what_torchvision_computes(name, state, options, size, reference):
    state = state()
    model, _, layout = torch_state_model(state, name, None, (3, size, size), options)
    assert layout == "torchvision"
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(state, x), model.eval()(x)
    assert got.shape == (2, CLASSES)  # the class count read from the file
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_resnet50_state_dict_through_the_cli(tmp_path, capsys):
    """The issue's command: torchvision's bottleneck strides in its 3x3 conv, so the import builds resnet50 with
    stride_in_3x3 and records it; a wrapped {'state_dict': ...} file reads the same."""
    state = resnet_state("resnet50")
    torch.save({"state_dict": dict(state)}, tmp_path / "resnet50.pth")
    assert main(["import-weights", str(tmp_path / "resnet50.pth"), "--model", "resnet50", "--trust",
                 "--input-size", "3x64x64", "--out", str(tmp_path / "r50")]) == 0
    assert "built with stride_in_3x3=True" in capsys.readouterr().out
    model, _, meta = model_from_checkpoint(tmp_path / "r50")
    assert meta["model"]["options"]["stride_in_3x3"] is True
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = resnet_reference("resnet50", state, x), model(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_googlenet_without_aux_and_the_paper_googlenet(tmp_path, capsys):
    """A file saved without the auxiliary heads builds googlenet_bn without them; the paper's googlenet (LRN,
    no BN) cannot hold torchvision's weights, and the error says which model can."""
    torch.save(dict(googlenet_state("cpu", aux=False)), tmp_path / "g.pth")
    assert main(["import-weights", str(tmp_path / "g.pth"), "--model", "googlenet_bn", "--trust",
                 "--input-size", "3x64x64", "--out", str(tmp_path / "g")]) == 0
    model, _, meta = model_from_checkpoint(tmp_path / "g")
    assert meta["model"]["options"] == {"aux": False, "torchvision": True} and model.aux1 is None
    capsys.readouterr()
    assert main(["import-weights", str(tmp_path / "g.pth"), "--model", "googlenet", "--trust",
                 "--out", str(tmp_path / "p")]) == 2
    assert "import it as --model googlenet_bn" in capsys.readouterr().err


def test_a_foreign_key_or_shape_is_named(tmp_path, capsys):
    state = dict(googlenet_state("cpu", aux=False))
    torch.save({**state, "conv1.extra.weight": torch.zeros(3)}, tmp_path / "a.pth")
    assert main(["import-weights", str(tmp_path / "a.pth"), "--model", "googlenet_bn", "--trust",
                 "--out", str(tmp_path / "a")]) == 2
    assert "holds 'conv1.extra.weight'" in capsys.readouterr().err
    torch.save(state, tmp_path / "b.pth")  # the paper's 5x5 branch where torchvision has 3x3
    assert main(["import-weights", str(tmp_path / "b.pth"), "--model", "googlenet_bn", "--trust",
                 "--model-option", "torchvision=false", "--out", str(tmp_path / "b")]) == 2
    assert ("shapes differ at features.inception3a.branches.branches.2.1.0.weight (torchvision's "
            "'inception3a.branch3.1.conv.weight')") in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
