"""First-party plugins: quantizers, certifiers, cost models, benchmarks and ARQ, registered via entry points."""

from arqbench.toolkit import moved_modules

# before 0.2 every plugin module sat in this package's top level; an old import says where it went (removed in 0.4)
moved_modules({f"{__name__}.{name}": f"{__name__}.{kind}.{name}" for kind, names in {
    "benchmarks": ("cifar", "cifar_data", "digits", "digits_mobilenetv2", "imagenet", "imagenet_data", "paper"),
    "quantizers": ("linear_quantizer", "lsq_quantizer"), "certifiers": ("rs", "irs"),
    "searches": ("arq", "robust_ilp")}.items() for name in names})
