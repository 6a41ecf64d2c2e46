"""The model zoo: parameter counts against torchvision's published numbers and closed forms, architecture
details (v1.5 stride placement, state_dict keys, residual adds as modules), options, and the registry."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from executor.models import DATASETS, MODELS, build_model, get_model_info, list_models
from executor.models.cifar_resnet import cifar_resnet, cifar_resnet_param_count
from executor.models.layers import Add, PadShortcut
from hardware.errors import ConfigError


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **kw)


# torchvision's published parameter counts (torchvision.models docs, 1000 classes)
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808, "alexnet": 61_100_840}


@pytest.mark.parametrize("name,expected", sorted(TORCHVISION_PARAMS.items()))
def test_param_counts_match_torchvision(name, expected):
    assert n_params(meta(name)) == expected


def test_alexnet_bn_params_closed_form():
    # AlexNet-BN = AlexNet minus the biases of the 5 convs and fc6/fc7, plus gamma+beta for each of them
    biased = 64 + 192 + 384 + 256 + 256 + 4096 + 4096
    assert n_params(meta("alexnet_bn")) == 61_100_840 - biased + 2 * biased == 61_110_184


def test_alexnet_bn_structure():
    m = meta("alexnet_bn")
    types = [type(x) for x in m.modules()]
    assert types.count(nn.BatchNorm2d) == 5 and types.count(nn.BatchNorm1d) == 2
    assert nn.Dropout not in types and nn.LocalResponseNorm not in types
    # layers followed by BN have no bias; the classifier's last layer keeps its bias
    convs = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    kept = meta("alexnet_bn", dropout=0.5)
    assert sum(isinstance(x, nn.Dropout) for x in kept.modules()) == 2
    assert n_params(kept) == n_params(m)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 18])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_cifar_resnet_params_closed_form(n, shortcut):
    with torch.device("meta"):
        model = cifar_resnet(6 * n + 2, shortcut=shortcut)
    assert n_params(model) == cifar_resnet_param_count(n, shortcut=shortcut)


def test_cifar_resnet_published_sizes():
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M parameters
    for name, millions in [("resnet20", 0.27), ("resnet32", 0.46), ("resnet44", 0.66), ("resnet56", 0.85),
                           ("resnet110", 1.7)]:
        assert round(n_params(meta(name)) / 1e6, 2 if millions < 1 else 1) == millions
    assert n_params(meta("resnet20", shortcut="B")) - n_params(meta("resnet20")) == 16 * 32 + 64 + 32 * 64 + 128


def test_resnet50_is_v15_and_state_dict_matches_torchvision_keys():
    m = meta("resnet50")
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)
    assert m.layer2[0].downsample[0].stride == (2, 2)
    sd = m.state_dict()
    assert len(sd) == 320  # torchvision resnet50: 53 convs, 53 BNs x 5 tensors, fc weight + bias
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight",
                "layer4.2.bn3.num_batches_tracked", "fc.weight", "fc.bias"):
        assert key in sd
    assert sum(isinstance(x, Add) for x in m.modules()) == 16


def test_every_leaf_module_called_once_per_forward():
    """Separate ReLU/Add modules per use: each table row is a distinct module (no '#2' rows)."""
    for name in ("resnet18", "resnet50", "resnet20", "alexnet_bn"):
        m = meta(name).eval()
        calls: dict[int, int] = {}
        hooks = [x.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1))
                 for x in m.modules() if not list(x.children())]
        m(torch.empty((1, *get_model_info(name).input_shape), device="meta"))
        for h in hooks:
            h.remove()
        assert calls and max(calls.values()) == 1, name


@pytest.mark.parametrize("name", ["tiny", "resnet20"])
def test_small_models_train_on_cpu(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(4, *get_model_info(name).input_shape)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet152", "alexnet", "alexnet_bn"])
def test_imagenet_models_output_shape(name):
    m = meta(name, num_classes=17).eval()
    assert m(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 17)


def test_zero_init_residual_makes_blocks_identity():
    torch.manual_seed(0)
    model = build_model("resnet20", zero_init_residual=True).eval()
    block = model.layer1[1]
    assert torch.count_nonzero(block.bn2.weight) == 0
    x = torch.randn(2, 16, 32, 32)
    assert torch.allclose(block(x), torch.relu(x))
    default = build_model("resnet20")
    assert torch.all(default.layer1[1].bn2.weight == 1)
    # bottleneck variant: last BN of each block is bn3
    from executor.models.resnet import Bottleneck, ResNet
    small = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in small.modules() if isinstance(b, Bottleneck))
    assert all(torch.all(b.bn2.weight == 1) for b in small.modules() if isinstance(b, Bottleneck))


def test_pad_shortcut_option_a():
    x = torch.arange(2 * 4 * 6 * 6, dtype=torch.float32).reshape(2, 4, 6, 6)
    y = PadShortcut(4, 8, stride=2)(x)
    assert y.shape == (2, 8, 3, 3)
    assert torch.equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :2]) == 0 and torch.count_nonzero(y[:, 6:]) == 0
    assert torch.equal(PadShortcut(4, 4, 1)(x), x)


def test_registry_contents_and_defaults():
    names = list_models()
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "alexnet", "alexnet_bn",
                 "resnet20", "resnet32", "resnet56", "tiny"):
        assert name in names and MODELS[name].name == name
    assert get_model_info("resnet50").input_shape == (3, 224, 224) and MODELS["resnet50"].num_classes == 1000
    assert get_model_info("resnet20").input_shape == (3, 32, 32) and MODELS["resnet20"].num_classes == 10
    assert DATASETS["imagenet"].train_images == 1_281_167
    assert get_model_info("ResNet-50").name == "resnet50" and get_model_info("AlexNet-BN").name == "alexnet_bn"


def test_build_model_num_classes_override():
    assert meta("resnet50", num_classes=10).fc.out_features == 10
    assert meta("resnet50").fc.out_features == 1000
    assert meta("tiny").fc.out_features == 10


def test_unknown_model_is_config_error():
    with pytest.raises(ConfigError) as info:
        build_model("resnet51")
    err = info.value
    assert (err.source, err.field, err.value) == ("--model", "model", "resnet51")
    assert "unknown model; known:" in str(err) and "resnet50" in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("kw", [{"num_classes": 0}, {"num_classes": "ten"}, {"no_such_option": 1},
                                {"shortcut": "C"}])
def test_bad_builder_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        with torch.device("meta"):
            build_model("resnet20", **kw)
