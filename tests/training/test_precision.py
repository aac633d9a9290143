"""Mixed precision of training steps: ``auto`` follows the hardware, ``bf16`` really computes the
forward pass in bfloat16, ``fp32`` changes nothing, and a bfloat16 step trains (the loss falls)."""

from __future__ import annotations

import pytest
import torch

from segqc.training.precision import autocast, resolve_precision


def test_explicit_precisions_are_kept_and_auto_follows_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
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
