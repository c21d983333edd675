"""The ``resnet-fast`` command and the measurement code behind it.

Installed with the package so that ``resnet-fast`` works after ``pip install .``;
the scripts under ``benchmarks/`` import from here instead of keeping copies.

Modules:
    main          argument parsing and validation, the four subcommands
    models        end-to-end model benchmark (training step, inference)
    registry      the benchmarked models: eager baseline, fast variant, own input size
    tutorial_models  CIFAR ResNets written as the common tutorials write them (user code)
    fusion        how many BatchNorms a fast model runs fused (counted at dispatch)
    ops           each fused op against its eager sequence
    op_cases      the fused ops and their eager sequences as timed callables
    check         self-check of every backend available here against the reference
    backends      which backends can run on this machine
    environment   versions, hardware, threads, allocator: what a result depends on
    timing        interleaved timing with warm-up, medians and device events
    progress      a dependency-free progress bar
    report        text and markdown tables, JSON files
    plot          PNG bar charts (matplotlib, optional)
"""
