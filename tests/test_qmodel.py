import pytest
import torch
from torch import nn

from ptqlib.quant.calibration import calibrate
from ptqlib.models import CifarResNet, EfficientNetLite0, Normalized, build_model
from ptqlib.quant.qmodel import QuantConfig, QuantizedModel, fold_bn, quantize_model

from .conftest import randomize_bn


def cifar_model(depth=3, classes=10):
    return Normalized(randomize_bn(CifarResNet(depth, classes)), (0.5,) * 3, (0.25,) * 3).eval()


def test_bn_fold_is_exact():
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=True)
    bn = randomize_bn(nn.BatchNorm2d(16))
    x = torch.randn(4, 8, 10, 10)
    ref = bn(conv(x))
    out = fold_bn(conv, bn)(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_bn_fold_keeps_every_tensor_on_the_layers_device():
    # the meta device computes no values but, like CUDA, refuses to mix with CPU tensors
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False).to("meta")
    bn = nn.BatchNorm2d(16).to("meta")
    folded = fold_bn(conv, bn)
    assert folded.weight.device.type == folded.bias.device.type == "meta"
    qmodel = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
                            .to("meta"), QuantConfig(4, 4))
    assert {t.device.type for t in [*qmodel.parameters(), *qmodel.buffers()]} == {"meta"}


def test_whole_network_with_quantization_off_equals_the_float_model():
    model = cifar_model()
    qmodel = quantize_model(model, QuantConfig(4, 4))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules())
    x = torch.rand(8, 3, 32, 32)
    ref, out = model(x), qmodel(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_reference_preset_places_quantizers_like_brecq():
    qmodel = calibrate(quantize_model(cifar_model(), QuantConfig(4, 4, "reference")), torch.rand(16, 3, 32, 32))
    layers, aqs = qmodel.quant_layers(), qmodel.act_quantizers()
    assert len(layers) == 1 + 2 * 9 + 1                       # stem, 9 blocks of 2 convs, linear
    assert len(aqs) == 1 + 2 * 9                              # stem ReLU, each conv1 ReLU, each block output
    assert [aq.scope for aq in aqs[:3]] == ["net.relu", "net.layer1.0.relu1", "net.layer1.0.relu2"]
    assert [l.weight_quantizer.spec.bits for _, l in layers] == [8] + [4] * 18 + [8]
    assert [aq.quantizer.spec.bits for aq in aqs] == [4] * 18 + [8]  # the last layer's input at 8 bits
    assert all(l.weight_quantizer.spec.per_channel and not l.weight_quantizer.spec.symmetric for _, l in layers)
    assert all(aq.quantizer.zero_point.item() == 0 for aq in aqs)  # post-ReLU ranges start at 0


def test_full_preset_quantizes_everything_at_the_target_bits():
    qmodel = quantize_model(cifar_model(), QuantConfig(4, 4, "full"))
    assert {l.weight_quantizer.spec.bits for _, l in qmodel.quant_layers()} == {4}
    assert {aq.quantizer.spec.bits for aq in qmodel.act_quantizers()} == {4}


def test_quantized_weights_are_pytorchs_per_channel_fake_quant():
    qmodel = calibrate(quantize_model(cifar_model(), QuantConfig(4, 4)), torch.rand(16, 3, 32, 32))
    for _, layer in qmodel.quant_layers():
        q = layer.weight_quantizer
        ref = torch.fake_quantize_per_channel_affine(layer.weight, q.scale, q.zero_point, 0, q.spec.qmin, q.spec.qmax)
        with torch.no_grad():
            assert torch.equal(layer.effective_weight(), ref)


def test_quant_state_switches_per_block_and_layer():
    qmodel = calibrate(quantize_model(cifar_model(), QuantConfig(4, 4)), torch.rand(16, 3, 32, 32))
    x = torch.rand(4, 3, 32, 32)
    all_on = qmodel(x)
    qmodel.set_quant_state(weights=False, acts=False)
    fp = qmodel(x)
    qmodel.set_quant_state(weights=True, acts=True, scope="net.layer2.1")
    on = [n for n, l in qmodel.quant_layers() if l.weight_quantizer.enabled]
    assert on == ["net.layer2.1.conv1", "net.layer2.1.conv2"]
    assert [aq.scope for aq in qmodel.act_quantizers() if aq.quantizer.enabled] == \
        ["net.layer2.1.relu1", "net.layer2.1.relu2"]
    block_only = qmodel(x)
    assert not torch.equal(block_only, fp) and not torch.equal(block_only, all_on)
    qmodel.set_quant_state(weights=False, scope="net.layer2.1.conv1")
    assert not qmodel.get_submodule("graph_module.net.layer2.1.conv1").weight_quantizer.enabled
    with pytest.raises(ValueError, match="no quantized layer in scope 'net.layer9'"):
        qmodel.set_quant_state(acts=True, scope="net.layer9")


def test_weight_cache_follows_recalibration():
    qmodel = calibrate(quantize_model(cifar_model(), QuantConfig(4, 4)), torch.rand(16, 3, 32, 32))
    layer = qmodel.quant_layers()[1][1]
    with torch.no_grad():
        before = layer.effective_weight().clone()
        layer.weight_quantizer.set_qparams(layer.weight_quantizer.scale * 2, layer.weight_quantizer.zero_point)
        assert not torch.equal(layer.effective_weight(), before)


def test_w8a8_stays_close_to_float_and_w2a2_does_not():
    model = cifar_model()
    x = torch.rand(32, 3, 32, 32)
    ref = model(x)
    err = {}
    for bits in (8, 2):
        qmodel = calibrate(quantize_model(model, QuantConfig(bits, bits, "full")), torch.rand(64, 3, 32, 32))
        err[bits] = ((qmodel(x) - ref).norm() / ref.norm()).item()
    assert err[8] < 0.05 < err[2]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "mnasnet1_0", "regnet_x_600mf", "lite0"])
def test_imagenet_architectures_fold_and_quantize(name):
    torch.manual_seed(0)
    if name == "lite0":
        net = EfficientNetLite0(num_classes=10)
    else:
        net = build_model(name, pretrained=False, num_classes=10).net
    model = Normalized(randomize_bn(net), (0.5,) * 3, (0.25,) * 3).eval()
    x = torch.rand(2, 3, 64, 64)
    qmodel = quantize_model(model, QuantConfig(8, 8))
    ref = model(x)
    assert (qmodel(x) - ref).abs().max() <= 1e-4 * ref.abs().max()  # folding keeps the float model
    calibrate(qmodel, torch.rand(4, 3, 64, 64))
    n_adds = sum(1 for n in qmodel.graph_module.graph.nodes if "add" in str(n.target))
    assert n_adds > 0 and len(qmodel.act_quantizers()) > 0
    # every residual add is followed (possibly through its activation) by a quantizer
    assert isinstance(qmodel, QuantizedModel) and torch.isfinite(qmodel(x)).all()
