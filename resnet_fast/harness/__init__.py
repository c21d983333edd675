"""The measurements behind ``resnet-fast`` (resnet_fast.cli) and the scripts
under benchmarks/: what is timed, how, and how results are reported.

    model_bench      end-to-end model benchmark (training step, inference)
    workloads        the benchmarked models: eager baseline, fast variant, own input size
    tutorial_models  CIFAR ResNets written as the common tutorials write them (user code)
    fusion           how many BatchNorms a fast model runs fused (counted at dispatch)
    op_bench         each fused op against its eager sequence
    op_cases         the fused ops and their eager sequences as timed callables
    check            every backend available here against the reference
    backends         which backends can run on this machine
    environment      versions, hardware, threads, allocator: what a result depends on
    timing           interleaved timing with warm-up, medians and device events
    report           text and markdown tables (tabulate), JSON files
    plot             PNG bar charts (matplotlib, optional)
"""
