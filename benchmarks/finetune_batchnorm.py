"""The README's earlier command, kept working: ``finetune_recipes.py --recipes protocol,frozen`` (BatchNorm
batch statistics, today's protocol, beside BatchNorm frozen from the start). Same arguments otherwise."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import finetune_recipes  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:1] = ["--recipes", "protocol,frozen"]
    try:
        sys.exit(finetune_recipes.main())
    except finetune_recipes.ArqbenchError as exc:
        sys.exit(f"finetune_batchnorm: {exc}")
