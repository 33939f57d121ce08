"""Benchmark plugins: a model, its data, its training recipe (digits, digits-mobilenetv2, CIFAR-10, ImageNet)."""
