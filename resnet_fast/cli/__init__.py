"""The ``resnet-fast`` command: argument parsing, validation and the four
subcommands (main.py). What they measure and how lives in resnet_fast.harness.

Installed with the package so that ``resnet-fast`` works after ``pip install .``.
"""
