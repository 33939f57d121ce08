"""First-party plugins: quantizers, certifiers, cost models, benchmarks and ARQ, registered via entry points."""

from arqbench.toolkit import keep_old_imports

# before 0.2 every plugin module sat in this package's top level; old imports keep working for one minor version
keep_old_imports({f"{__name__}.{name}": f"{__name__}.{kind}.{name}" for kind, names in {
    "benchmarks": ("cifar", "cifar_data", "digits", "digits_mobilenetv2", "imagenet", "imagenet_data", "paper"),
    "quantizers": ("linear_quantizer", "lsq_quantizer"), "certifiers": ("rs", "irs"),
    "searches": ("arq", "robust_ilp")}.items() for name in names})
