"""ResNets the way users write them, for convert()'s tests: the CIFAR
tutorials' ResNet-18/50 (a `shortcut` Sequential, F.relu, `out += shortcut`),
an embedding ResNet with a tuple output and a forward torch.fx cannot trace,
biased convolutions with a conv skip and no BN, pre-activation ResNets,
ResNeXt / dilated blocks under other attribute names, an option-A
(zero-padding) shortcut, and traps where a fusion would change the math.

Every model takes a `width` so the tests run small.
"""

import torch
import torch.nn.functional as F
from torch import nn

# The tutorials' basic block and network are resnet_fast.harness's (plain
# PyTorch); the bottleneck below is written in other idioms (torch.add,
# Tensor.relu, an in-place F.relu) that convert() must recognize as well.
from resnet_fast.harness.tutorial_models import TutorialBasicBlock, TutorialCifarResNet


class TutorialBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)).relu()
        out = self.bn3(self.conv3(out))
        out = torch.add(out, self.shortcut(x))
        return F.relu(out, inplace=True)


def tutorial_resnet18(width=64, num_classes=10):
    return TutorialCifarResNet(TutorialBasicBlock, [2, 2, 2, 2], num_classes, width)


def tutorial_resnet50(width=64, num_classes=10):
    return TutorialCifarResNet(TutorialBottleneck, [3, 4, 6, 3], num_classes, width)


class TwoConvBlock(nn.Module):
    """conv -> BN -> ReLU, then conv -> BN -> add -> ReLU with an identity
    shortcut, 16 channels: small enough to go through inductor in a test,
    and two eval keys (the second convolution adds a residual).

    Shape:
        [N, 16, H, W] -> [N, 16, H, W].
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class BiasedBlock(nn.Module):
    """Convolutions with biases before the BNs and a 1x1 conv skip without BN."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        self.norm_a = nn.BatchNorm2d(cout)
        self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=True)
        self.norm_b = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.norm_a(self.conv_a(x)))
        y = self.norm_b(self.conv_b(y))
        return self.act(self.skip(x) + y)  # the BN output as the second operand


class EmbeddingResNet(nn.Module):
    """One input channel, (logits, embedding) out, and a top-level forward
    torch.fx cannot trace (a data-dependent check)."""

    def __init__(self, width=8, embedding=16, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.body = nn.Sequential(
            BiasedBlock(width, 2 * width, 2), TutorialBasicBlock(2 * width, 2 * width)
        )
        self.embed = nn.Linear(2 * width, embedding)
        self.head = nn.Linear(embedding, num_classes)

    def forward(self, x):
        if torch.isnan(x).any():
            raise ValueError("NaN in the input")
        features = self.body(self.stem(x)).mean(dim=(2, 3))
        emb = F.normalize(self.embed(features), dim=1)
        return self.head(emb), emb


class PreActBlock(nn.Module):
    """A pre-activation (v2) block: BN-ReLU before each convolution."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class PreActProbe(nn.Module):
    """A pre-activation block named exactly like torchvision's BasicBlock."""

    def __init__(self, planes):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + x


class PreActResNet(nn.Module):
    def __init__(self, width=8, num_classes=10, probe=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        blocks = [PreActBlock(width, width), PreActBlock(width, 2 * width, 2)]
        if probe:
            blocks.append(PreActProbe(2 * width))
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(2 * width)
        self.linear = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        out = self.layers(self.conv1(x))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ResNeXtBlock(nn.Module):
    """Grouped (and dilated) 3x3 in a bottleneck, parts under other names."""

    def __init__(self, cin, width, cout, groups=4, dilation=1):
        super().__init__()
        self.reduce = nn.Conv2d(cin, width, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(width)
        self.grouped = nn.Conv2d(
            width, width, 3, padding=dilation, dilation=dilation, groups=groups, bias=False
        )
        self.grouped_bn = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, cout, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(cout)
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.reduce_bn(self.reduce(x)).relu_()
        y = torch.relu_(self.grouped_bn(self.grouped(y)))
        y = self.expand_bn(self.expand(y))
        return F.relu(y.add_(self.proj(x)))


class ResNeXtNet(nn.Module):
    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 2 * width, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(2 * width)
        self.stage = nn.Sequential(
            ResNeXtBlock(2 * width, 2 * width, 4 * width),
            ResNeXtBlock(4 * width, 2 * width, 4 * width, dilation=2),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.stage(F.relu_(self.stem_bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class OptionABlock(nn.Module):
    """He et al.'s CIFAR block with the zero-padding ("option A") shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ChainedBlocks(nn.Module):
    """A block's BN output added to another block's output."""

    def __init__(self, width=4):
        super().__init__()
        self.a = OptionABlock(width, 2 * width, 2)
        self.conv = nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * width)

    def forward(self, x):
        first = self.a(x)
        return F.relu(self.bn(self.conv(first)) + first)


# Traps: each must be left alone (or fused only where it is safe).


class _ConvBN(nn.Module):
    """A 3x3 convolution (c -> c channels) and its BN; the traps below differ
    only in what their forward does with them."""

    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)


class ReusedBN(_ConvBN):
    """The BN output feeds the ReLU and the sum: no fusion."""

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) + y


class BNAfterReLU(_ConvBN):
    """conv -> ReLU -> BN -> conv: no ReLU after the BN, nothing to fuse."""

    def __init__(self, c=8):
        super().__init__(c)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.out(self.bn(F.relu(self.conv(x))))


class SumWithoutReLU(_ConvBN):
    """BN + shortcut with no ReLU after the sum: no fusion."""

    def forward(self, x):
        return torch.sigmoid(self.bn(self.conv(x)) + x)


class ScaledBN(nn.BatchNorm2d):
    """A BatchNorm2d subclass with its own math: never fused."""

    def forward(self, x):
        return super().forward(x) * 0.5


class SubclassBN(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn = ScaledBN(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Traps(nn.Module):
    """All the traps in one model, next to one fusable chain."""

    def __init__(self, c=8):
        super().__init__()
        self.reused, self.after, self.nosum = ReusedBN(c), BNAfterReLU(c), SumWithoutReLU(c)
        self.sub = SubclassBN(c)
        self.ok_conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.ok_bn = nn.BatchNorm2d(c)

    def forward(self, x):
        x = self.sub(self.nosum(self.after(self.reused(x))))
        return F.relu(self.ok_bn(self.ok_conv(x)))


class TimmStyleBlock(nn.Module):
    """timm's BasicBlock layout: act1 / act2, drop_block and aa as
    nn.Identity placeholders, optional se and drop_path, `x += shortcut`."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = None
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.drop_path = None

    def forward(self, x):
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        x = self.bn2(x)
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        x = self.act2(x)
        return x


class TimmStyleNet(nn.Module):
    """timm's ResNet-D layout: deep stem, act1, max-pool, then blocks."""

    def __init__(self, width=4, num_classes=10):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False),
        )  # fmt: skip
        self.bn1 = nn.BatchNorm2d(2 * width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(
            TimmStyleBlock(2 * width, 2 * width), TimmStyleBlock(2 * width, 4 * width, 2)
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        return self.fc(x.mean((2, 3)))
