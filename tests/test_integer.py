"""The int8 engine against fake quantization on small networks."""
import pytest
import torch
from torch import nn

from ptqlib.quant.calibration import calibrate
from ptqlib.quant.evaluation import check_engine
from ptqlib.quant.integer import NoIntegerPath, _integer_weight, agreement, pairs_saturate, to_integer
from ptqlib.models import CifarResNet, EfficientNetLite0, Normalized
from ptqlib.quant.qmodel import QuantConfig, quantize_model

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


def test_eight_bit_weights_split_into_int8_parts_that_sum_to_their_levels():
    qmodel = quantized(cifar_model(), 8, 8)
    layer = qmodel.graph_module.get_submodule("net.layer1.0.conv1")
    parts, scale = _integer_weight(layer, "net.layer1.0.conv1")
    levels = torch.round(layer.effective_weight().detach() / scale.view(-1, 1, 1, 1))
    assert levels.abs().max() > 127 and len(parts) >= 2  # random weights use the whole 8-bit range
    assert all(p.dtype == torch.int8 for p in parts) and torch.equal(sum(p.long() for p in parts), levels.long())
    with torch.no_grad():  # a level of 255 (zero point 0, top level) needs three parts
        wq = layer.weight_quantizer
        wq.set_qparams(wq.scale, torch.zeros_like(wq.zero_point))
        layer.weight.abs_()
        layer.weight[0, 0, 0, 0] = 1e3
    parts, scale = _integer_weight(layer, "x")
    assert len(parts) == 3 and sum(p[0, 0, 0, 0].item() for p in parts) == 255


@pytest.mark.parametrize("make,size", [(lambda: cifar_model(depth=3), 32), (lite_model, 64)])
def test_eight_bit_weights_match_fake_quantization_to_rare_one_level_ties(make, size):
    a_bits = 7 if pairs_saturate() else 8  # without VNNI, 8-bit weights need 7-bit activations
    qmodel = quantized(make(), 8, a_bits, calib_images=8, size=size)
    imodel = to_integer(qmodel)
    x = torch.rand(8, 3, size, size)
    total = differing = 0
    for name, (fake, ints) in layer_levels(qmodel, imodel, x).items():
        diff = (fake - ints).abs()
        assert diff.max() <= 1, name
        total, differing = total + diff.numel(), differing + int((diff > 0).sum())
    assert differing <= 1e-4 * total
    with torch.no_grad():
        assert (qmodel(x).argmax(1) == imodel(x).argmax(1)).double().mean().item() >= 0.99


def test_a_cpu_whose_pairs_of_products_saturate_refuses_only_layers_past_the_bound(monkeypatch):
    """Without VNNI, oneDNN's AVX2 kernels add pairs of uint8 x int8 products in 16 bits: 8-bit
    weights (levels to 128) with 8-bit activations (to 255) can pass 32,767 and are refused;
    7-bit activations or 6-bit weights stay within it. With VNNI nothing is refused."""
    import ptqlib.quant.integer as integer

    monkeypatch.setattr(integer, "pairs_saturate", lambda: True)
    with pytest.raises(NoIntegerPath, match=r"^layer \S+ on this CPU \(no VNNI\).*2 x 255 x 12[0-8] = \d+ > 32767.*engine 'fake'"):
        to_integer(quantized(cifar_model(depth=3), 8, 8, calib_images=8))
    for w_bits, a_bits in [(8, 7), (6, 8), (4, 4)]:
        to_integer(quantized(cifar_model(depth=3), w_bits, a_bits, calib_images=8))
    monkeypatch.setattr(integer, "pairs_saturate", lambda: False)
    to_integer(quantized(cifar_model(depth=3), 8, 8, calib_images=8))


def test_a_sweep_refuses_int8_widths_that_saturate_before_its_first_trial(monkeypatch, tiny_data, tmp_path):
    import ptqlib.quant.integer as integer
    from ptqlib.study.settings import int8_input_bits, trial_config
    from ptqlib.study.store import ResultsStore
    from ptqlib.study.sweep import run_sweep

    monkeypatch.setattr(integer, "pairs_saturate", lambda: True)
    integer.check_widths(8, 7)
    integer.check_widths(6, 8)
    with pytest.raises(NoIntegerPath, match=r"^engine 'int8' with 7-bit weights and 8-bit inputs .*\(no VNNI\).*2 x 255 x 127 = 64770"):
        integer.check_widths(7, 8)
    weights = tmp_path / "w.pt"
    torch.save(randomize_bn(CifarResNet(3, num_classes=3), seed=5).state_dict(), weights)
    cells = [trial_config(model="resnet20", dataset=f"folder:{tiny_data}", weights=str(weights), calib_size=16,
                          w_bits=w, a_bits=8, engine="int8") for w in (4, 8)]
    store = ResultsStore(tmp_path / "s.sqlite")
    with pytest.raises(NoIntegerPath, match="8-bit weights and 8-bit inputs"):
        run_sweep(cells, store, progress=False)
    assert not store.existing_keys()  # the W4A8 trial did not run either
    assert run_sweep(cells[:1], store, progress=False)["ran"] == 1
    # BRECQ's first-layer convention keeps the first layer's output, a convolution's input, at 8 bits
    first = trial_config(model="resnet20", w_bits=8, a_bits=4, engine="int8", optimizer="brecq",
                         variant="reference", first_layer="brecq")
    assert int8_input_bits(first) == 8 and int8_input_bits(trial_config(w_bits=8, a_bits=4)) == 4


def test_uncalibrated_or_disabled_quantization_is_refused():
    qmodel = quantized(cifar_model(), 4, 4)
    qmodel.set_quant_state(weights=False)
    with pytest.raises(NoIntegerPath, match="weight quantization is not enabled"):
        to_integer(qmodel)


def test_engine_names_and_models_are_checked():
    assert check_engine("fake", "resnet18") == "fake"
    assert check_engine("int8", "resnet20") == "int8"
    with pytest.raises(ValueError, match="unknown engine 'int4'; choose one of fake, int8, fake-reordered, fake-float64"):
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


def test_bench_reports_the_int8_engine_beside_fake_quantization(capsys, tiny_data, tiny_checkpoint):
    import json

    from ptqlib.app.cli import main

    args = ["bench", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint), "--calib-size", "8",
            "--reps", "1", "--no-torch-ao", "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("int8_eval_s", "int8_convert_s", "int8_trial_s"):
        assert res[key] > 0
    assert res["int8_trial_s"] == pytest.approx(res["calib_s"] + res["int8_convert_s"] + res["int8_eval_s"], abs=2e-3)
    assert 0.9 <= res["int8_agreement"] <= 1 and res["int8_max_class_diff"] >= 0
    a_bits = "7" if pairs_saturate() else "8"  # without VNNI, 8-bit weights need 7-bit activations
    assert main([*args, "--w-bits", "8", "--a-bits", a_bits]) == 0  # 8-bit weights: split into int8 parts
    res = json.loads(capsys.readouterr().out)
    assert "int8_skipped" not in res and res["int8_eval_s"] > 0 and 0.9 <= res["int8_agreement"] <= 1


# --- the engine setting -------------------------------------------------------------------------

def test_fake_engine_keeps_the_keys_stored_before_the_setting_existed():
    import json

    from ptqlib.study.calibset import CalibSpec
    from ptqlib.study.settings import TrialConfig

    # computed before TrialConfig had an engine; the first is a key of results/trials.sqlite
    stored = json.loads('{"calib": {"bias_class": null, "bias_p": null, "noise": 0.0, "noise_kind": null, '
                        '"size": 256}, "dataset": "cifar10-jpeg", "model": "resnet20", "optimizer": "grid", '
                        '"quant": {"a_bits": 4, "metric": "mse", "preset": "reference", "w_bits": 4, '
                        '"weight_metric": "mse"}, "seed": 0, "weights": null}')
    assert TrialConfig.from_dict(stored).key() == "41c6ceacb8b629f2c77ca6e9"
    assert TrialConfig(quant=QuantConfig(8, 8)).key() == "85ed9e2b98a8fad0bb96a69d"  # the W8A8 default of then
    assert TrialConfig("resnet20", "cifar10-jpeg", quant=QuantConfig(4, 4), seed=7).key() == "5efc2c5ed4f6b8750e617faa"
    assert TrialConfig("efficientnet_lite0", "imagenet-val10", quant=QuantConfig(6, 6), calib=CalibSpec(256, 0.01),
                       seed=3).key() == "7dcbdcb6ae7615c218869fcc"
    assert TrialConfig("resnet20", "cifar10-jpeg", quant=QuantConfig(8, 8), optimizer="qdrop",
                       seed=1).key() == "e64de7e5bca95f6919e81a5f"
    assert "engine" not in TrialConfig().to_dict()


def test_int8_engine_is_part_of_the_key_and_round_trips():
    from ptqlib.study.settings import TrialConfig

    fake, int8 = TrialConfig(quant=QuantConfig(4, 4)), TrialConfig(quant=QuantConfig(4, 4), engine="int8")
    assert int8.key() != fake.key() and int8.to_dict()["engine"] == "int8"
    assert TrialConfig.from_dict(int8.to_dict()) == int8 and TrialConfig.from_dict(fake.to_dict()) == fake


def test_int8_engine_refuses_what_has_no_integer_path_in_one_line():
    from ptqlib.study.settings import TrialConfig

    with pytest.raises(ValueError, match=r"^unknown engine 'int4'; choose one of fake, int8, fake-reordered, fake-float64$"):
        TrialConfig(quant=QuantConfig(4, 4), engine="int4")
    with pytest.raises(ValueError, match=r"^engine 'int8' has no integer path for model 'mobilenet_v2'"):
        TrialConfig(model="mobilenet_v2", dataset="imagenet-val10", quant=QuantConfig(4, 4), engine="int8")
    TrialConfig(quant=QuantConfig(8, 8), engine="int8")  # 8-bit weights run as int8 parts


def test_cli_engine_option(capsys, tiny_data, tiny_checkpoint):
    import json

    from ptqlib.app.cli import main

    args = ["quantize", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint), "--calib-size", "16",
            "--json"]
    assert main(args) == 0
    fake = json.loads(capsys.readouterr().out)
    assert main([*args, "--engine", "int8"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert int8["config"]["engine"] == "int8" and "engine" not in fake["config"]
    assert abs(int8["avg"] - fake["avg"]) <= 100 / 24 + 1e-9  # 24 test images: at most one differs here
    assert main([*args, "--engine", "fake-reordered"]) == 0  # the same fake model in another float order
    reordered = json.loads(capsys.readouterr().out)
    assert reordered["config"]["engine"] == "fake-reordered" and abs(reordered["avg"] - fake["avg"]) <= 100 / 24 + 1e-9
    assert main([*args, "--engine", "fake-float64"]) == 0  # the same fake model in float64
    wide = json.loads(capsys.readouterr().out)
    assert wide["config"]["engine"] == "fake-float64" and abs(wide["avg"] - fake["avg"]) <= 100 / 24 + 1e-9
    assert main([*args, "--engine", "int8", "--model", "resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptq: error: engine 'int8' has no integer path for model 'resnet18'") and "\n" not in err


def test_int8_trials_are_stored_apart_from_fake_ones(tmp_path, tiny_data, tiny_checkpoint):
    import sqlite3

    from ptqlib.study.store import ResultsStore
    from ptqlib.study.sweep import run_sweep
    from ptqlib.study.settings import TrialConfig

    from ptqlib.study.calibset import CalibSpec

    base = TrialConfig("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint), QuantConfig(4, 4), CalibSpec(16))
    store = ResultsStore(tmp_path / "s.sqlite")
    run_sweep([base, TrialConfig(**{**base.__dict__, "engine": "int8"})], store, workers=1)
    rows = store.trials()
    assert sorted(rows["engine"].fillna("NULL")) == ["NULL", "int8"]  # NULL: fake quantization, as before
    assert rows["config_key"].nunique() == 2
    assert len(store.trials(engine=None)) == 1 and len(store.trials(engine="int8")) == 1
    # a store from before the column gets it, NULL in its rows
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE trials (key TEXT PRIMARY KEY, config_key TEXT NOT NULL, config TEXT NOT NULL)")
    con.commit()
    con.close()
    ResultsStore(old)
    con = sqlite3.connect(old)
    assert "engine" in {r[1] for r in con.execute("PRAGMA table_info(trials)")}
    con.close()


class _SharedResidual(nn.Module):
    """Two residual adds of the same activation: the first add must not overwrite it."""

    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.skip = nn.Identity()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.a(x) + self.skip(x))
        z = torch.relu(self.b(y) + self.skip(x))
        return self.head(z.mean((2, 3)))


def test_a_residual_operand_read_later_is_not_overwritten():
    qmodel = quantized(_SharedResidual().eval(), 4, 4, calib_images=16, size=16)
    imodel = to_integer(qmodel)
    assert imodel.integer_layers == 2
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        fake, ints = qmodel(x), imodel(x)
    assert torch.allclose(fake, ints, atol=1e-4 * fake.abs().max().item())


def test_float64_engine_keeps_the_weights_levels_and_rounds_activations_in_float64():
    from ptqlib.quant.evaluation import Float64
    from ptqlib.quant.qmodel import QUANT_LAYERS

    qmodel = quantized(cifar_model(depth=3), 4, 4)
    exact = Float64(qmodel)
    pairs = [(a, b) for a, b in zip(qmodel.modules(), exact.model.modules()) if isinstance(a, QUANT_LAYERS)]
    assert pairs and all(a.weight_quantizer.enabled and not b.weight_quantizer.enabled for a, b in pairs)
    for a, b in pairs:  # the copy holds the original's grid values; the original still quantizes
        assert b.weight.dtype == torch.float64 and torch.equal(b.weight, a.effective_weight().double())
    x = torch.rand(256, 3, 32, 32)
    with torch.no_grad():
        fake, wide = qmodel(x), exact(x)
    assert wide.dtype == torch.float64 and fake.dtype == torch.float32
    same = (fake.argmax(1) == wide.argmax(1)).double().mean().item()
    assert same >= 0.99  # float32 and float64 differ only on near-ties
    assert (wide - fake.double()).abs().max() < 0.5 * fake.abs().max()
