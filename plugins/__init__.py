"""First-party plugins: quantizers, certifiers, cost models, benchmarks and ARQ, registered via entry points."""
