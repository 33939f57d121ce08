"""How the protocol's quantization-aware fine-tune treats a quantized model (DESIGN §4 step 3), on top of the
benchmark's ``TrainRecipe`` (epochs, lr, batch size): the standard remedies for a low-bit fine-tune that
collapses, each off by default, so the default is the fine-tune every published result was made with.

- ``bn_recalibrate``: re-estimate every BatchNorm's running statistics on the quantized model, as cumulative
  averages over a pass of noisy fine-tune batches (``arqbench.models.batchnorm.recalibrate``), before the
  fine-tune and again after it.
- ``bn_freeze``: after this fraction of the fine-tune's optimizer steps, BatchNorm layers normalize with their
  running statistics and stop updating them (eval mode) for the rest, as torchvision's QAT reference recipe does
  (``--num-batch-norm-update-epochs``); None: never (0: frozen from the start).
- ``lr_scale``: the recipe's learning rate times this.
- ``equalize``: cross-layer equalization of the float model before it is quantized
  (``arqbench.quantization.equalization``): "none"; "exact" (only pairs whose function it preserves
  exactly: joined by BatchNorm and ReLU or identity); "relu6" (ReLU6 replaced by ReLU first, as AIMET
  does, so pairs joined by ReLU6 are equalized too: this changes the float model where a pre-activation
  exceeds 6).
"""

from dataclasses import asdict, dataclass, fields

from arqbench.errors import ArqbenchError

EQUALIZE = ("none", "exact", "relu6")


@dataclass(frozen=True)
class FinetuneRecipe:
    bn_recalibrate: bool = False
    bn_freeze: float | None = None
    lr_scale: float = 1.0
    equalize: str = "none"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, values: dict | None) -> "FinetuneRecipe":
        """The recipe from its recorded fields (missing ones at their defaults); one clear error for a bad one."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ArqbenchError(f"unknown fine-tune recipe field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        recipe = cls(**values)
        if recipe.bn_freeze is not None and not 0 <= recipe.bn_freeze <= 1:
            raise ArqbenchError(f"fine-tune recipe bn_freeze must be a fraction in [0, 1] or None, got {recipe.bn_freeze}")
        if not recipe.lr_scale > 0:
            raise ArqbenchError(f"fine-tune recipe lr_scale must be positive, got {recipe.lr_scale}")
        if recipe.equalize not in EQUALIZE:
            raise ArqbenchError(f"fine-tune recipe equalize must be one of {', '.join(EQUALIZE)}, got '{recipe.equalize}'")
        return recipe


def fields_from_text(text: str, where: str = "--finetune-recipe") -> dict:
    """``KEY=VALUE[,KEY=VALUE]`` (e.g. ``bn_freeze=0,lr_scale=0.5``; ``bn_freeze=none`` for never) -> the fields
    given, typed and checked; one line naming ``where`` for a mistake."""
    known = [f.name for f in fields(FinetuneRecipe)]
    out: dict = {}
    for part in (p.strip() for p in str(text).split(",")):
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise ArqbenchError(f"{where} expects KEY=VALUE pairs separated by commas (e.g. bn_freeze=0,lr_scale=0.5), "
                                f"got '{text}'")
        if key not in known:
            raise ArqbenchError(f"{where}: unknown field '{key}'; known: {', '.join(known)}")
        try:
            if key == "bn_recalibrate":
                if raw.lower() not in ("true", "false"):
                    raise ValueError
                out[key] = raw.lower() == "true"
            elif key == "bn_freeze":
                out[key] = None if raw.lower() in ("none", "never") else float(raw)
            elif key == "lr_scale":
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            expected = {"bn_recalibrate": "true or false", "bn_freeze": "a fraction or none"}.get(key, "a number")
            raise ArqbenchError(f"{where}: {key} expects {expected}, got '{raw}'") from None
    try:
        FinetuneRecipe.parse(out)  # its range checks
    except ArqbenchError as exc:
        raise ArqbenchError(f"{where}: {exc}") from None
    return out


DEFAULT = FinetuneRecipe().as_dict()  # the fine-tune every result made before the recipe was recorded ran
