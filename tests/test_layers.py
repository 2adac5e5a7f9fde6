"""mnistcnn.model.layers' batch norm against torch's own: the same outputs, gradients and running
statistics, and torch's kernel wherever the fast form does not apply."""

import pytest
import torch
from torch import nn

from mnistcnn.model.layers import BatchNorm2d

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


def both(channels: int, momentum: float | None = 0.1) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    """torch's batch norm and ours, with the same random affine parameters."""
    theirs, ours = nn.BatchNorm2d(channels, momentum=momentum), BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        theirs.weight.uniform_(-2, 2), theirs.bias.uniform_(-1, 1)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and parameter gradients of one forward and backward."""
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    y.backward(grad)
    return y, x.grad, module.weight.grad, module.bias.grad, type(y.grad_fn).__name__


@pytest.mark.parametrize("shape", [(16, 12, 28, 28), (8, 20, 7, 7), (5, 24, 3, 3), (3, 40, 1, 2)])
def test_training_on_channels_last_matches_torch_to_rounding_and_updates_the_same_statistics(shape):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 1.5).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    theirs, ours = both(shape[1])
    for _ in range(2):  # twice: the running statistics move from where the first step left them
        expected, got = step(theirs, x, grad), step(ours, x, grad)
    assert got[-1] == "_ChannelsLastBatchNormBackward" and expected[-1] != got[-1]
    assert got[0].is_contiguous(memory_format=torch.channels_last) and got[1].is_contiguous(
        memory_format=torch.channels_last)
    for want, have in zip(expected[:4], got[:4]):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert ours.num_batches_tracked.item() == 2


def test_a_cumulative_average_momentum_is_kept_too():
    x = torch.randn(4, 12, 5, 5).contiguous(memory_format=torch.channels_last)
    theirs, ours = both(12, momentum=None)
    for scale in (1.0, 3.0):
        theirs(x * scale), ours(x * scale)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["nchw", "16 channels", "eval", "one value a channel"])
def test_torchs_own_kernel_runs_where_the_fast_form_does_not_apply(case):
    channels = 16 if case == "16 channels" else 12
    shape = (1, channels, 1, 1) if case == "one value a channel" else (4, channels, 6, 6)
    x = torch.randn(shape)
    if case != "nchw":
        x = x.contiguous(memory_format=torch.channels_last)
    theirs, ours = both(channels)
    if case == "eval":
        theirs.eval(), ours.eval()
    if case == "one value a channel":
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            ours(x)
        return
    grad = torch.randn(shape).contiguous(memory_format=torch.channels_last if case != "nchw" else torch.contiguous_format)
    expected, got = step(theirs, x, grad), step(ours, x, grad)
    assert got[-1] == ("_ChannelsLastGradientBackward" if case == "16 channels" else expected[-1])
    assert all(torch.equal(have, want) for have, want in zip(got[:4], expected[:4]) if want is not None)


def test_torchs_kernel_gets_its_gradient_channels_last_whatever_layout_it_comes_back_in():
    # below a global average pool the gradient comes back NCHW; torch's kernel is 10x slower on it
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    seen = []
    y = BatchNorm2d(16)(x)
    y.grad_fn.next_functions[0][0].register_hook(lambda grad_in, grad_out: seen.append(grad_out[0]))
    grad = torch.randn(4, 16, 6, 6)  # NCHW
    y.backward(grad)
    assert grad.is_contiguous() and seen[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(seen[0], grad)


def test_its_state_dict_is_torchs():
    theirs, ours = both(12)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert isinstance(ours, nn.BatchNorm2d)

