"""Mixed precision of training steps: ``auto`` follows the hardware, ``bf16`` really computes the
forward pass in bfloat16, ``fp32`` changes nothing, and a bfloat16 step trains (the loss falls)."""

from __future__ import annotations

import pytest
import torch

from segqc.training.precision import autocast, conv3d_by_slices, resolve_precision, shield_conv3d


def test_explicit_precisions_are_kept_and_auto_follows_the_cpu(monkeypatch):
    """``auto`` is ``bf16`` only on a CPU with AVX-512 BF16 or AMX-BF16 instructions: on one with
    AVX-512 alone oneDNN emulates bfloat16, slower than float32."""
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    capabilities = torch.cpu.get_capabilities()
    native = bool(capabilities["avx512_bf16"] or capabilities["amx_bf16"])
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    for avx512_bf16, amx_bf16, expected in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda a=avx512_bf16, b=amx_bf16: {
            **capabilities, "avx512_f": True, "avx512_bw": True, "avx512_bf16": a, "amx_bf16": b})
        assert resolve_precision("auto", cpu) == expected
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16x", cpu)
    with pytest.raises(ValueError, match="resolved"):
        with autocast(cpu, "auto"):
            pass


def test_bf16_runs_convolutions_in_bfloat16_and_fp32_does_not():
    conv = torch.nn.Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 4, 8, 8)
    with autocast(torch.device("cpu"), "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert conv(x).dtype == torch.float32


def test_a_bfloat16_step_trains_a_small_regression():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(32, 1, 8, 8)
    y = x.mean(dim=(1, 2, 3)).unsqueeze(1) * 4
    losses = []
    for _ in range(150):
        with autocast(torch.device("cpu"), "bf16"):
            out = net(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert losses[-1] < 0.2 * losses[0]


def _depth_two_weight_gradient_errors(conv: torch.nn.Conv3d, calls: int) -> list[float]:
    """Relative error of the weight gradient of ``conv`` under bf16 autocast against float32 on
    a (4, 16, 2, 4, 4) input, for ``calls`` calls (NaN counts as infinite)."""
    torch.manual_seed(0)
    x = torch.randn(4, 16, 2, 4, 4).bfloat16().float()
    g = torch.randn(4, 16, 2, 4, 4).bfloat16().float()
    weight = conv.weight.detach().clone().requires_grad_(True)
    torch.nn.functional.conv3d(x, weight, padding=1).backward(g)  # float32: the reference
    reference = weight.grad
    errors = []
    for _ in range(calls):
        conv.weight.grad = None
        with autocast(torch.device("cpu"), "bf16"):
            out = conv(x)
        out.backward(g.to(out.dtype))
        error = (conv.weight.grad - reference).abs().max() / reference.abs().max()
        errors.append(float(error.nan_to_num(float("inf"))))
    return errors


def test_shielded_3d_convolutions_have_right_weight_gradients_at_a_depth_of_two_slices():
    # PyTorch 2.13's CPU bfloat16 kernel returns garbage weight gradients for inputs 2 slices
    # deep (training/precision.py); shielded convolutions compute them in float32 (exact here)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False)
    assert shield_conv3d(conv) == 1 and shield_conv3d(conv) == 0
    assert max(_depth_two_weight_gradient_errors(conv, 40)) < 1e-5
    with autocast(torch.device("cpu"), "bf16"):
        assert conv(torch.randn(1, 16, 4, 4, 4)).dtype == torch.bfloat16  # other depths stay bf16
        assert conv(torch.randn(1, 16, 2, 4, 4)).dtype == torch.float32


@pytest.mark.parametrize(("kernel", "padding", "dilation", "groups", "stride"), [
    ((1, 3, 3), (0, 1, 1), (1, 1, 1), 1, (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), 1, (1, 2, 2)),
    ((3, 1, 3), (2, 0, 1), (2, 1, 1), 2, (1, 1, 2)),
])
def test_a_3d_convolution_by_slices_equals_torchs_conv3d(kernel, padding, dilation, groups, stride):
    # Float32, so the only difference is the order of the sums
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 9, 8)
    weight = torch.randn(6, 4 // groups, *kernel)
    bias = torch.randn(6)
    expected = torch.nn.functional.conv3d(x, weight, bias, stride, padding, dilation, groups)
    got = conv3d_by_slices(x, weight, bias, padding, dilation, groups, stride)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="depth stride"):
        conv3d_by_slices(x, weight, bias, padding, dilation, groups, (2, 1, 1))


@pytest.mark.parametrize("kernel", [(1, 3, 3), (3, 3, 3)])
def test_shielded_3d_convolutions_of_few_large_slices_avoid_the_3d_bfloat16_kernel(kernel, monkeypatch):
    # The AMX weight-gradient kernel corrupts the heap for (4, 8, <= 8, 96, 96) inputs (the module
    # docstring); shielded, such a convolution never reaches conv3d under bfloat16 and its
    # gradients are those of the float32 convolution up to bfloat16 rounding
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(8, 8, kernel, padding=tuple(k // 2 for k in kernel))
    shield_conv3d(conv)
    x = torch.randn(4, 8, 4, 96, 96).bfloat16().float()
    g = torch.randn(4, 8, 4, 96, 96).bfloat16().float()
    reference = torch.nn.Conv3d(8, 8, kernel, padding=tuple(k // 2 for k in kernel))
    reference.load_state_dict(conv.state_dict())
    with torch.no_grad():
        reference.weight.copy_(reference.weight.bfloat16().float())
    x_ref = x.clone().requires_grad_(True)
    reference(x_ref).backward(g)

    def refuse(*args, **kwargs):
        raise AssertionError("the 3D kernel was called")

    monkeypatch.setattr(torch.nn.functional, "conv3d", refuse)
    x_in = x.clone().requires_grad_(True)
    with autocast(torch.device("cpu"), "bf16"):
        out = conv(x_in)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 8, 4, 96, 96)
    out.float().backward(g)
    for got, want in ((conv.weight.grad, reference.weight.grad), (x_in.grad, x_ref.grad),
                      (conv.bias.grad, reference.bias.grad)):
        assert got is not None and want is not None
        assert float((got - want).abs().max() / want.abs().max()) < 0.02
    with pytest.raises(AssertionError, match="3D kernel"):  # float32 runs are untouched
        conv(x)
