"""Search ``arq`` (Yang et al., arXiv 2410.24214): HAQ's agent and action wall, rewarded by certified robustness.

Each candidate policy's smoothed quantized model is certified with the ``irs`` certifier
against the float model's cached certification on the first ``images`` examples of the
search split (held out of the training data, never the certification subset), so a
candidate costs n_p = np * n samples per image instead of n. The reward is

    acr_weight * (ACR_q - ACR_f) / ACR_f  +  acc_weight * (smoothed_acc_q - smoothed_acc_f)

where the float model's ACR_f and accuracy are measured by the same IRS estimator (f against
itself: zero disagreements), so reference and candidates share one estimator.
"""

from dataclasses import fields, replace

from torch.utils.data import Subset

from arqbench import plugins
from arqbench.hookspecs import hookimpl
from arqbench.search.agent import AgentSettings, rl_search
from arqbench.search.context import SearchResult
from arqbench.smoothing.certification import Reference, certify_subset
from arqbench.smoothing.metrics import summarize


class ARQ:
    def __init__(self, acr_weight: float = 1.0, acc_weight: float = 0.0, images: int = 100, n: int | None = None,
                 finetune: int = 0, certifier: str = "irs", **agent):
        names = {f.name for f in fields(AgentSettings)} - {"episodes"}
        unknown = set(agent) - names
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; known: acr_weight, acc_weight, images, n, "
                            f"finetune, certifier, {', '.join(sorted(names))}")
        self.acr_weight, self.acc_weight, self.images, self.n = acr_weight, acc_weight, images, n
        self.finetune, self.certifier, self.agent = finetune, certifier, agent

    def search(self, ctx) -> SearchResult:
        search = ctx.data.search
        subset = Subset(search, list(range(min(self.images, len(search)))))
        config = replace(ctx.smoothing, n=self.n or ctx.smoothing.n)
        reference = Reference(ctx.model, {**ctx.reference_key, "data": "search"}, ctx.settings["np"],
                              ctx.benchmark.gamma)
        certifier = plugins.create("certifier", self.certifier)
        radii, classes = ctx.benchmark.radii, ctx.benchmark.num_classes

        def measure(model, description):
            certs = certify_subset(certifier, model, subset, config, classes, reference, description)
            zetas = [c.details["zeta"] for c in certs if "zeta" in c.details]
            return summarize(certs, radii), {
                "zeta_mean": sum(zetas) / len(zetas) if zetas else None, "zeta_max": max(zetas, default=None),
                "fallbacks": sum(bool(c.details.get("fallback")) for c in certs),
            }

        reference_metrics, _ = measure(ctx.model, "arq: float reference")

        def reward(policy):
            model = ctx.finetune(ctx.quantize(policy), self.finetune)
            metrics, zeta = measure(model, "arq: candidate")
            relative_acr = (metrics["acr"] - reference_metrics["acr"]) / max(reference_metrics["acr"], 1e-12)
            value = self.acr_weight * relative_acr + self.acc_weight * (
                metrics["smoothed_acc"] - reference_metrics["smoothed_acc"])
            return value, {"acr": metrics["acr"], "smoothed_acc": metrics["smoothed_acc"], **zeta}

        settings = AgentSettings(episodes=ctx.settings["episodes"], **self.agent)
        result = rl_search(ctx, reward, settings, "arq search")
        result.info.update({
            "reward": {"acr_weight": self.acr_weight, "acc_weight": self.acc_weight},
            "float_acr": reference_metrics["acr"], "float_smoothed_acc": reference_metrics["smoothed_acc"],
            "images": len(subset), "n": config.n, "np": ctx.settings["np"], "certifier": self.certifier,
            "certifier_stats": dict(getattr(certifier, "stats", {})),
        })
        return result


@hookimpl
def register_search(register):
    register("arq", ARQ)
