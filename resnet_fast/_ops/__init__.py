"""The ops layer: everything between the public API and the kernels.

backends.py       the one dispatch point: which backend (op namespace) runs
contract.py       what every backend's ops share beyond the schemas:
                  fake kernels, autograd, declare_namespace
checks.py         argument checks, with the C++ checks' messages
numerics.py       the numeric rules the Python-side backends share
layout.py         the memory format every backend writes
reference_ops.py  the "reference" backend: the ops in pure PyTorch
fused.py          the checked entry every caller of the fused ops takes
"""
