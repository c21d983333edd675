"""Convolution algorithms and the choice among them.

spec.py          a convolution's static arguments and output size
folded.py        BN folded into a convolution; oneDNN's convolution with
                 fused bias, add and ReLU post-ops, prepacked weights
inference.py     eval-mode conv + BN: the folded weights cached, Winograd
                 where tuned faster
gemm.py          convolutions as matrix products (small maps, CPU)
winograd.py      Winograd F(4x4, 3x3) (CPU, float32)
training.py      the lean blocks' training convolutions: oneDNN, GEMM or
                 Winograd, forward and backward
measured.py      choices timed on this machine, once per shape, stored
choice_store.py  the stored choices: one file per machine and build
settle.py        resnet_fast.tune: eval-mode choices timed in the model
"""
