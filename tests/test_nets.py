"""Target nets: the fast MLP path equals hypnettorch's forward; conv nets read [B, C, H, W]."""
import pytest
import torch

from hyperdgm.nets import TargetNet


@pytest.mark.parametrize("no_weights", [False, True])
@pytest.mark.parametrize("act", ["relu", "elu"])
def test_plain_mlp_path_equals_hypnettorch(no_weights, act):
    torch.manual_seed(0)
    net = TargetNet("mlp", (1, 28, 28), 3, hidden=(50, 40), act=act, no_weights=no_weights)
    x = torch.rand(5, 1, 28, 28)
    w = [torch.randn(s) * 0.1 for s in net.param_shapes] if no_weights else None
    fast = net(x, w)
    reference = net.net.forward(x.flatten(1), weights=w)
    assert torch.allclose(fast, reference, atol=1e-6)
    assert net.n_params == 784 * 50 + 50 + 50 * 40 + 40 + 40 * 3 + 3


def test_conv_nets_take_images():
    for arch in ("zenke", "resnet32"):
        net = TargetNet(arch, (3, 32, 32), 10)
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
