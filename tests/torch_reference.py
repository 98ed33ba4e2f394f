"""PyTorch reference modules shared by the parity tests (import after pytest.importorskip("torch"))."""
import math

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


def randomize(model, seed=0):
    """Random weights everywhere, in eval mode: BatchNorm statistics, layer scales and a non-zero CCA gamma included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, tnn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, tnn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if "layer_scale" in name or "scaling" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
            elif name.endswith(("cca.gamma", "cca.gamma.scale")):
                p.fill_(0.8)
    return model.eval()
