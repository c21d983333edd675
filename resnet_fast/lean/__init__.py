"""Memory-lean training: one autograd node per residual block and stem,
keeping the convolution outputs only and recomputing the BN-ReLU outputs in
backward (nodes.py); a residual block's training step lean or as eager
PyTorch, whichever is measured faster (residual.py)."""
