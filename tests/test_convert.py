"""convert() / revert(): torchvision-dataflow blocks become fast blocks, no copies, optimizers
keep working, reports, state_dict compatibility both ways."""

import copy

import torch
from torch import nn

import resnet_fast
from resnet_fast.graph_fusion.graph_module import FusedGraph
from resnet_fast.models.plain import BasicBlock as PlainBasicBlock
from resnet_fast.models.plain import plain_model
from resnet_fast.nn import BasicBlock, BatchNormAddReLU2d, BatchNormReLU2d, Bottleneck


def test_converts_blocks_and_stem_without_copying():
    model = plain_model("resnet50", num_classes=10)
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    buffers = {n: b.data_ptr() for n, b in model.named_buffers()}
    keys = list(model.state_dict())
    report = []
    out = resnet_fast.convert(model, report=report)
    # The top-level forward (the stem) is rewritten: a new module over the same tensors.
    assert isinstance(out, FusedGraph) and out.layer1 is model.layer1
    assert {n: p.data_ptr() for n, p in out.named_parameters()} == before
    assert {n: b.data_ptr() for n, b in out.named_buffers()} == buffers
    assert list(out.state_dict()) == keys
    assert all(isinstance(b, Bottleneck) for layer in (out.layer1, out.layer4) for b in layer)
    assert isinstance(out.layer1[0].bn3, BatchNormAddReLU2d)
    assert any("conv1 + bn1 + relu + maxpool" in e[2] for e in report)
    converted = [e for e in report if e[1] == "converted"]
    assert len(converted) == 16 + 1  # 16 bottlenecks and the stem


def test_matches_the_unconverted_model_and_trains_with_an_old_optimizer():
    torch.manual_seed(0)
    ref = plain_model("resnet18", num_classes=10).double()
    model = copy.deepcopy(ref)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # built before convert
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    resnet_fast.convert(model)
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 2, 3, 4])
    for net, o in ((model, opt), (ref, ref_opt)):
        for _ in range(2):
            o.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            o.step()
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=k)


def test_recognizes_structure_not_class_and_reports_what_it_leaves():
    class MyBlock(nn.Module):  # torchvision's structure under another name
        expansion = 1

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(8)
            self.downsample = None
            self.stride = 1

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + x)

    gn_block = PlainBasicBlock(8, 8, norm_layer=lambda c: nn.GroupNorm(2, c))
    model = nn.Sequential(MyBlock(), gn_block, nn.Conv2d(8, 8, 1))
    report = []
    resnet_fast.convert(model, report=report)
    assert isinstance(model[0], BasicBlock) and model[1] is gn_block
    reasons = {name: (action, why) for name, action, why in report}
    assert reasons["0"][0] == "converted"
    assert reasons["1"][0] == "graph route" and "GroupNorm" in reasons["1"][1]
    assert reasons["1.bn1"][0] == "left alone" and "GroupNorm" in reasons["1.bn1"][1]
    assert "2" not in reasons  # a plain conv is no candidate


def test_revert_gives_plain_modules_and_state_dicts_load_both_ways():
    fast = resnet_fast.models.resnet18(num_classes=10)
    plain = plain_model("resnet18", num_classes=10)
    plain.load_state_dict(fast.state_dict(), strict=True)
    fast.load_state_dict(plain.state_dict(), strict=True)
    reverted = resnet_fast.revert(copy.deepcopy(fast))
    assert not any(
        isinstance(m, (BatchNormReLU2d, BatchNormAddReLU2d, BasicBlock, Bottleneck))
        for m in reverted.modules()
    )
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fast.double().eval(), reverted.double().eval()
    torch.testing.assert_close(reverted(x), fast(x), rtol=1e-9, atol=1e-9)
    again = resnet_fast.convert(reverted)
    torch.testing.assert_close(again(x), fast(x), rtol=1e-9, atol=1e-9)


def test_inplace_false_leaves_the_original_alone():
    model = plain_model("resnet18")
    out = resnet_fast.convert(model, inplace=False)
    assert out is not model and isinstance(model.layer1[0], PlainBasicBlock)
    assert isinstance(out.layer1[0], BasicBlock)
