"""arqbench: a benchmark harness for robustness-aware mixed-precision quantization.

As a library (``arqbench.api``)::

    import arqbench
    certs = arqbench.certify(model, inputs, labels, sigma=0.25, n=10_000)   # randomized smoothing, any nn.Module
    certs.summary(radii=[0.25, 0.5])
    results = arqbench.run(methods=["hawq", "uniform"], sigma=0.25, out="results")  # as `arqbench run`
    arqbench.load_results("results")          # one row per cell; load_certificates: one per certified image
    arqbench.quantize(model, {"net.fc": (4, 8)}, calibration=batch)
    arqbench.plugins.names("search")           # and plugins.create(kind, name, **options)

``python -m arqbench`` is the ``arqbench`` command.
"""

from arqbench import _moved
from arqbench.version import PLUGIN_API, __version__

_moved.install()  # an import of a module that moved fails with one line naming the import to write

_API = {"certify", "run", "load_results", "load_certificates", "quantize", "base_model", "load_model", "export_onnx",
        "Certificates", "SavedModel"}
__all__ = ["__version__", "PLUGIN_API", "plugins", *sorted(_API)]


def __getattr__(name: str):
    """The API is imported on first use, so ``arqbench --help`` does not wait for torch and pandas."""
    if name in _API:
        from arqbench import api

        return getattr(api, name)
    if name == "plugins":
        import importlib

        return importlib.import_module("arqbench.plugins")
    raise AttributeError(f"module 'arqbench' has no attribute '{name}'")
