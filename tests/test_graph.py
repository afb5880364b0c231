"""thesislib.graph: the one channel-group model (tracing, members, attention, spectral norm, keep count)."""

import pytest
import torch
from torch import nn

from thesislib.graph import dependency_graph, inplace_disabled
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


# ---------------------------------------------------------------- the one channel-group model
from thesislib import graph  # noqa: E402
from thesislib.graph import ChannelGroup, Member, Role, attention_blocks, attention_group, keep_count, trace  # noqa: E402


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).eval()


def test_one_definition_of_groups_roles_and_keep_count():
    import thesislib.continuous as cont
    import thesislib.pruning as pr

    assert cont.ChannelGroup is pr.ChannelGroup is ChannelGroup and cont.Member is Member
    assert Role.PRODUCER == "producer" and [r.value for r in graph.ROLES] == ["producer", "consumer", "norm"]
    assert [keep_count(r, 7) for r in (1.0, 0.5, 0.2, 0.01)] == [7, 4, 1, 1]
    g = ChannelGroup("g", 6, partitions=[[0, 1, 2], [3, 4, 5]])
    assert g.width == 6 and g.kept_counts(0.5) == [2, 2]


def test_trace_describes_members_roles_and_the_flatten_index_map():
    net, x = _cnn(), torch.randn(2, 2, 2, 2)
    groups = {g.name: g for g in trace(net, x).groups}
    first = groups["0"]
    assert first.reason == "" and all(isinstance(m.role, Role) for m in first.members)
    roles = {(m.module_name, m.param_name): m.role for m in first.members}
    assert roles == {("0", "weight"): Role.PRODUCER, ("0", "bias"): Role.PRODUCER, ("1", "weight"): Role.NORM,
                     ("1", "bias"): Role.NORM, ("1", "running_mean"): Role.NORM, ("1", "running_var"): Role.NORM,
                     ("3", "weight"): Role.CONSUMER}
    assert all(m.local is None for m in first.members) and first.outputs == ["0", "1"]
    flat = groups["3"]  # conv -> flatten -> Linear: channel c owns the Linear's columns 4c .. 4c + 3
    linear = next(m for m in flat.members if m.module_name == "6")
    assert linear.role == Role.CONSUMER and linear.local == tuple(tuple(range(4 * c, 4 * c + 4)) for c in range(4))
    assert "non-trivially" in flat.reason
    values = torch.arange(3 * 16, dtype=torch.float).reshape(3, 16)
    assert torch.equal(linear.reduce(values, 1, 4), values.reshape(3, 4, 4).sum((0, 2)))


def test_attention_groups_index_the_packed_projection():
    from thesislib.models.vit import Attention

    block = attention_blocks(nn.Sequential(Attention(4, num_heads=2, head_dim=3)))[0]
    assert (block.name, block.kind, block.num_heads, block.head_dim) == ("0", "vit", 2, 3)
    hd = attention_group(block, "head_dim")
    q, k = (next(m for m in hd.members if m.view == v and m.param_name == "weight") for v in "qk")
    assert hd.size == 3 and q.local == ((0, 3), (1, 4), (2, 5)) and k.local == ((6, 9), (7, 10), (8, 11))
    assert q.role == k.role == Role.PRODUCER and q.axis == 0 and q.dim == 1
    proj = next(m for m in hd.members if m.view == "proj")
    assert proj.role == Role.CONSUMER and proj.axis == 1 and proj.dim == 2 and proj.local == ((0, 3), (1, 4), (2, 5))
    per_head = attention_group(block, "head_dim", per_head=True)
    assert per_head.size == 6 and per_head.partitions == [[0, 1, 2], [3, 4, 5]] and per_head.kept_counts(0.5) == [2, 2]
    heads = attention_group(block, "heads")
    assert heads.size == 2 and next(m for m in heads.members if m.view == "v").local == ((12, 13, 14), (15, 16, 17))
    with pytest.raises(ValueError, match="heads"):
        attention_group(block, "tokens")


def test_spectral_norm_discovery_and_other_parametrisations_refused():
    from torch.nn.utils.parametrizations import orthogonal, spectral_norm

    from thesislib.continuous import to_continuous
    from thesislib.pruning import prune

    net = nn.Sequential(spectral_norm(nn.Conv2d(2, 4, 3)), nn.ReLU(), nn.Conv2d(4, 2, 1))
    (sn,) = graph.spectral_norms(net)
    assert (sn.module_name, sn.dim, sn.module) == ("0", 0, net[0])
    bad = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), orthogonal(nn.Linear(3, 3)), nn.Linear(3, 2))
    x = torch.randn(2, 3)
    for convert in (lambda: to_continuous(bad, x), lambda: prune(bad, "l1", 0.5, x)):
        with pytest.raises(ValueError, match=r"'2' .*spectral_norm"):
            convert()


def test_bad_inputs_raise_clear_errors():
    from thesislib.continuous import to_continuous

    net = _cnn()
    with pytest.raises(ValueError, match=r"does not run on example_inputs of shape \[\(1, 3, 2, 2\)\]"):
        trace(net, torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="does not run on example_inputs"):
        to_continuous(net, torch.randn(1, 2, 5, 5))
    nan = _cnn()
    with torch.no_grad():
        nan[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        to_continuous(nan, torch.randn(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"'1' of type Embedding"):
        graph.check_supported(nn.Sequential(nn.Linear(2, 4), nn.Embedding(4, 4)))


class _Shuffle(nn.Module):
    """ShuffleNet's channel shuffle between two convolution pairs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 8, 1), nn.Conv2d(8, 4, 1)
        self.c, self.d = nn.Conv2d(4, 6, 1), nn.Conv2d(6, 3, 1)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.d(torch.relu(self.c(self.b(x))))


def test_channel_shuffle_is_traced_and_kept_discrete():
    from thesislib.continuous import to_continuous
    from thesislib.pruning import prune

    torch.manual_seed(0)
    net, x = _Shuffle().eval(), torch.randn(2, 2, 4, 4)
    groups = {g.name: g for g in trace(net, x).groups}  # torch-pruning alone maps the shuffle as the identity
    assert "channel shuffle" in groups["a"].reason and groups["b"].reason == groups["c"].reason == ""
    cnet = to_continuous(net, x).eval().resample(0.5)
    assert sorted(g.name for g in cnet.groups) == ["b", "c"] and "channel shuffle" in cnet.discrete_groups["a"]
    small = prune(net, "l1", 0.5, x)
    assert (small.a.out_channels, small.b.out_channels, small.c.out_channels) == (8, 2, 3)
    assert small(x).shape == (2, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(cnet(x), cnet.export()(x), atol=1e-5)


class _StoredWidth(nn.Module):
    """A forward that reshapes with a stored width (torchvision's VisionTransformer.hidden_dim)."""

    def __init__(self, fixable: bool = True):
        super().__init__()
        self.width, self.fixable = 6, fixable
        self.conv, self.head = nn.Conv2d(2, 6, 2, stride=2), nn.Linear(6, 3)

    def forward(self, x):
        x = self.conv(x)
        width = self.width if self.fixable else 6
        return self.head(x.reshape(x.shape[0], width, -1).mean(2))


def test_a_stored_width_follows_the_group_or_the_group_stays_discrete():
    from thesislib.continuous import to_continuous

    torch.manual_seed(0)
    x = torch.randn(2, 2, 4, 4)
    cnet = to_continuous(_StoredWidth(), x).eval()
    assert [g.name for g in cnet.groups] == ["conv"]
    small = cnet.resample(0.5).export()
    assert small.width == 3 and small.conv.out_channels == 3 and cnet.net.width == 3
    with torch.no_grad():
        assert torch.allclose(cnet(x), small(x), atol=1e-6)
    cnet = to_continuous(_StoredWidth(fixable=False), x)
    assert cnet.groups == [] and "breaks the forward (RuntimeError" in cnet.discrete_groups["conv"]
    assert cnet.net.conv.out_channels == 6  # the probe leaves the network at full width


def test_vit_residual_stream_is_removed_through_the_attention_leaf():
    from thesislib.models import vit
    from thesislib.pruning import prune

    torch.manual_seed(0)
    net, x = vit(image_size=8, patch_size=4, width=0.25, depth=1).eval(), torch.randn(2, 1, 8, 8)
    small = prune(net, "l1", 0.5, x, ignored_layers=[net.head])  # the stream too (patch_embed not ignored)
    attn = small.blocks[0].attn
    assert small.patch_embed.out_channels == 8 and small.cls_token.shape[-1] == 8
    assert attn.qkv.in_features == attn.qkv.weight.shape[1] == 8 and attn.proj.out_features == attn.proj.weight.shape[0] == 8
    assert small(x).shape == (2, 10)
