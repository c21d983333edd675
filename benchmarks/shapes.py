"""ResNet-50 BatchNorm shapes: (C, H) of every BN layer kind, batch 16 by default."""

# Each (C, H=W) that a ResNet-50 BatchNorm sees at 224x224 input.
RESNET50_BN_SHAPES = [
    (64, 112),  # stem
    (64, 56),
    (256, 56),
    (128, 28),
    (512, 28),
    (256, 14),
    (1024, 14),
    (512, 7),
    (2048, 7),
]
