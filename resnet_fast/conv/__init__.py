"""Convolution algorithms and the choice among them.

spec.py             a convolution's static arguments, output size and operand checks
folded.py           BN folded into a convolution; oneDNN's convolution with
                    fused bias, add and ReLU post-ops, prepacked weights
inference.py        eval-mode conv + BN: the folded weights cached, run by
                    the algorithm tuned fastest
eval_algorithms.py  the eval-mode candidates (oneDNN, Winograd, tap by tap)
                    and the choice among them
gemm.py             convolutions as matrix products (small maps, CPU)
winograd.py         Winograd F(4x4, 3x3) (CPU, float32)
taps.py             1x1 and 3x3 convolutions tap by tap, and their weight
                    gradient (CPU)
training.py         the lean blocks' training convolutions: oneDNN, GEMM,
                    Winograd or tap by tap, forward and backward
measured.py         choices timed on this machine, once per shape, stored
choice_store.py     the stored choices: one file per machine and build
settle.py           resnet_fast.tune: eval-mode choices timed in the model
switches.py         the package's on/off switches from the environment
"""
