"""The int8 engine against fake quantization on small networks."""
import pytest
import torch
from torch import nn

from ptqlib.calibration import calibrate
from ptqlib.integer import NoIntegerPath, agreement, check_engine, to_integer
from ptqlib.models import CifarResNet, EfficientNetLite0, Normalized
from ptqlib.qmodel import QuantConfig, quantize_model

from .conftest import randomize_bn


def cifar_model(depth=1, classes=10):
    return Normalized(randomize_bn(CifarResNet(depth, classes)), (0.5,) * 3, (0.25,) * 3).eval()


def lite_model(classes=10):
    return Normalized(randomize_bn(EfficientNetLite0(classes)), (0.5,) * 3, (0.5,) * 3).eval()


def quantized(model, w_bits, a_bits, calib_images=32, size=32):
    torch.manual_seed(1)
    return calibrate(quantize_model(model, QuantConfig(w_bits, a_bits)), torch.rand(calib_images, 3, size, size))


def layer_levels(qmodel, imodel, x):
    """Each activation quantizer's integer levels, fake against int8, where every integer layer
    gets the fake model's own input (so that differences do not propagate):
    ``{name: (fake levels, int8 levels)}``."""
    mods = dict(qmodel.graph_module.named_modules())
    fake = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: fake.__setitem__(n, o))
             for n, m in mods.items() if n.startswith("act_quant_")]
    with torch.no_grad():
        qmodel(x)
    for h in hooks:
        h.remove()
    env, out = {}, {}
    with torch.inference_mode():
        for node, fn, inputs, _ in imodel._steps:
            value = x if node.op == "placeholder" else fn(*[env[i].clone() if isinstance(env[i], torch.Tensor)
                                                            else env[i] for i in inputs])
            if node.op == "call_module" and node.target in fake:
                q = mods[node.target].quantizer
                levels = torch.round(fake[node.target] / q.scale) + q.zero_point
                out[node.target] = (levels, value.float())
                value = levels.to(torch.uint8).contiguous(memory_format=torch.channels_last)
            env[node] = value
    return out


@pytest.mark.parametrize("w_bits,a_bits", [(4, 4), (2, 4), (6, 6), (4, 8)])
def test_cifar_resnet_layers_match_fake_quantization_to_rare_one_level_ties(w_bits, a_bits):
    qmodel = quantized(cifar_model(), w_bits, a_bits)
    imodel = to_integer(qmodel)
    assert imodel.integer_layers == 6 and imodel.float_layers == ["net.conv1", "net.linear"]
    levels = layer_levels(qmodel, imodel, torch.rand(16, 3, 32, 32))
    assert len(levels) == 7  # stem, then per block relu1 and the output after the add
    total = differing = 0
    for name, (fake, ints) in levels.items():
        diff = (fake - ints).abs()
        assert diff.max() <= 1, name  # at most one level apart (a rounding tie)
        assert ints.max() <= qmodel.graph_module.get_submodule(name).quantizer.spec.qmax  # the bit-width's clamp
        total, differing = total + diff.numel(), differing + int((diff > 0).sum())
    assert differing <= 1e-4 * total


def test_cifar_resnet_predictions_agree_with_fake_quantization():
    qmodel = quantized(cifar_model(depth=3), 4, 4)
    imodel = to_integer(qmodel)
    x = torch.rand(512, 3, 32, 32)
    with torch.no_grad():
        fake, ints = qmodel(x), imodel(x)
    assert ints.dtype == torch.float32 and ints.shape == fake.shape
    same = (fake.argmax(1) == ints.argmax(1)).double().mean().item()
    assert same >= 0.99  # the stated agreement on random images (on the CIFAR-10 test set: all of 10,000)


def test_option_a_shortcut_pads_with_the_zero_point():
    qmodel = quantized(cifar_model(), 4, 4)
    aq = qmodel.act_quantizers()[2]  # the first stage's output, which the stride-2 shortcut reads
    aq.quantizer.set_qparams(aq.quantizer.scale, torch.tensor(3))  # a zero point that is not 0
    imodel = to_integer(qmodel)
    steps = {node.name: fn for node, fn, _, _ in imodel._steps}
    q = torch.randint(0, 16, (2, 16, 8, 8), dtype=torch.uint8)
    out = steps["pad"](steps["getitem"](q))
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], q[:, :, ::2, ::2])
    assert torch.all(out[:, :8] == 3) and torch.all(out[:, 24:] == 3)  # the real value 0


def test_efficientnet_lite_layers_match_fake_quantization():
    qmodel = quantized(lite_model(), 4, 6, calib_images=8, size=64)
    imodel = to_integer(qmodel)
    assert imodel.float_layers == ["net._conv_stem", "net._fc"]
    levels = layer_levels(qmodel, imodel, torch.rand(4, 3, 64, 64))
    total = differing = 0
    for name, (fake, ints) in levels.items():
        diff = (fake - ints).abs()
        assert diff.max() <= 1, name
        total, differing = total + diff.numel(), differing + int((diff > 0).sum())
    assert differing <= 1e-4 * total


def test_eight_bit_weights_beyond_int8_are_refused_with_the_layer_named():
    qmodel = quantized(cifar_model(), 8, 8)
    with pytest.raises(NoIntegerPath, match=r"layer net\.layer1\.0\.conv1: 8-bit weights use levels"):
        to_integer(qmodel)


def test_uncalibrated_or_disabled_quantization_is_refused():
    qmodel = quantized(cifar_model(), 4, 4)
    qmodel.set_quant_state(weights=False)
    with pytest.raises(NoIntegerPath, match="weight quantization is not enabled"):
        to_integer(qmodel)


def test_engine_names_and_models_are_checked():
    assert check_engine("fake", "resnet18") == "fake"
    assert check_engine("int8", "resnet20") == "int8"
    with pytest.raises(ValueError, match="unknown engine 'int4'; choose one of fake, int8"):
        check_engine("int4")
    with pytest.raises(NoIntegerPath, match="no integer path for model 'resnet18'"):
        check_engine("int8", "resnet18")


def test_agreement_reports_share_and_per_class_difference():
    labels = torch.tensor([0, 0, 1, 1])
    fake = torch.tensor([0, 1, 1, 1])
    ints = torch.tensor([0, 0, 1, 0])
    out = agreement(fake, ints, labels, [0, 1])
    assert out["agreement"] == 0.5 and out["differing_images"] == 2
    assert out["per_class"][0] == {"fake": 50.0, "int8": 100.0, "diff": 50.0}
    assert out["per_class"][1]["diff"] == -50.0
    with pytest.raises(ValueError, match="one shape"):
        agreement(fake, ints[:3], labels, [0, 1])
