"""thesislib.dependency: tracing sees layers behind in-place activations, and restores the flags."""

import pytest
import torch
from torch import nn

from thesislib.dependency import dependency_graph, inplace_disabled
from thesislib.models import srcnn


def test_srcnn_groups_are_found_despite_inplace_relu():
    import torch_pruning as tp

    net, x = srcnn(), torch.rand(1, 1, 24, 24)
    plain = tp.DependencyGraph().build_dependency(net, example_inputs=x)
    # torch-pruning 1.6.1 alone loses the convolutions behind the in-place ReLUs
    with pytest.raises(ValueError, match="not in the dependency graph"):
        plain.get_pruning_group(net.conv1, tp.prune_conv_out_channels, idxs=[0])
    ours = dependency_graph(net, x)
    group = ours.get_pruning_group(net.conv1, tp.prune_conv_out_channels, idxs=[0])
    assert net.conv2 in {dep.target.module for dep, _ in group}
    assert net.relu1.inplace and net.relu2.inplace


def test_inplace_flags_restored_when_body_raises():
    net = nn.Sequential(nn.ReLU(inplace=True), nn.ReLU(inplace=False))
    with pytest.raises(RuntimeError):
        with inplace_disabled(net):
            assert not net[0].inplace
            raise RuntimeError
    assert net[0].inplace and not net[1].inplace
