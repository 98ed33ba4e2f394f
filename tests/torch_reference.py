"""PyTorch reference modules shared by the parity tests (import after pytest.importorskip("torch"))."""
import torch

tnn = torch.nn
F = torch.nn.functional


class TBottleneck(tnn.Module):
    """torchvision / MIT / mmseg 'pytorch'-style Bottleneck: stride on conv2."""

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + idt)


def make_layer(inplanes, planes, stride, dilations):
    ds = None
    if stride != 1 or inplanes != planes * 4:
        ds = tnn.Sequential(tnn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), tnn.BatchNorm2d(planes * 4))
    blocks = [TBottleneck(inplanes, planes, stride, dilations[0], ds)]
    blocks += [TBottleneck(planes * 4, planes, 1, d) for d in dilations[1:]]
    return tnn.Sequential(*blocks)
