"""Routers: how much each expert counts, α_e, in `p(x_t|x_<t) = Σ_e α_e p_e(x_t|x_<t)`.

Two kinds, and the difference matters for cost:
- *fixed per sequence*: uniform, a fixed prior, and the prefix routers (TF-IDF, language ID),
  which read the sequence's prefix (the prompt, or the context before the scored text) once.
  With top-k, the experts outside the top k are not run at all for that sequence.
- *updated every token*: the Bayesian posterior over the prefix, `α_e(t) ∝ prior_e ·
  p_e(x_≤t)^(1/T)`, from the experts' own likelihoods of the tokens so far. It needs every
  expert's prediction at every token, so top-k only sparsifies α; it saves no compute.

All weights are log-probabilities, `(batch, experts)`, each row summing to one in probability.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from xelm.errors import XelmError
from xelm.spec import Spec, one_of

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: the router names and `RouterChoice` are read by the run
# config and the CLI, which should not wait for torch to load.
ROUTER_DIR = "router"  # in an ensemble folder: the routers' state


def check_log_weights(log_alpha: torch.Tensor, where: str = "α") -> None:
    import torch

    total = log_alpha.logsumexp(-1)
    if not torch.allclose(total, torch.zeros_like(total), atol=1e-4):
        raise XelmError(f"{where}: expert weights must sum to one (got {total.exp().tolist()})")


def top_k(log_alpha: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest weights per row (renormalised); the others become log 0."""
    import torch

    if k is None or k >= log_alpha.shape[-1]:
        return log_alpha
    keep = log_alpha.topk(k, dim=-1).indices
    masked = torch.full_like(log_alpha, -math.inf).scatter(-1, keep, log_alpha.gather(-1, keep))
    return masked - masked.logsumexp(-1, keepdim=True)


class Router:
    """Base: a fixed prior over the experts (uniform unless given)."""

    name = "prior"
    per_token = False  # True: α depends on the experts' likelihoods of the tokens so far
    reads_prefix = False  # True: α comes from the text of the sequence's prefix
    allocation_method: str | None = None  # needs the state of this kind of allocation
    default_temperature: float | None = None

    @classmethod
    def from_config(cls, config, folder: Path | None) -> Router:
        """This router for an ensemble's config (and its folder, holding router state)."""
        return cls(len(config.experts), config.prior)

    def __init__(self, n_experts: int, prior: list[float] | None = None):
        import torch

        p = torch.full((n_experts,), 1.0 / n_experts) if prior is None else torch.tensor(prior)
        if p.shape != (n_experts,) or (p < 0).any() or abs(float(p.sum()) - 1) > 1e-4:
            raise XelmError(
                f"router prior {prior}: need {n_experts} non-negative weights summing to one"
            )
        self.log_prior = p.double().log().float()

    def fixed(self, batch: int) -> torch.Tensor:
        return self.log_prior.expand(batch, -1)

    def route(self, texts: list[str]) -> torch.Tensor | None:
        """α per sequence from its prefix text; None: no opinion (use the posterior)."""
        return self.fixed(len(texts))

    def route_each(self, texts: list[str]) -> list[torch.Tensor | None]:
        """log α (experts,) of each text on its own; None where the router has no opinion of
        that text (the caller decides)."""
        return [None if (a := self.route([t])) is None else a[0] for t in texts]

    def posterior(self, loglik: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log α ∝ log prior + loglik / T (loglik: (..., experts), the prefix's log p_e)."""
        scores = self.log_prior.to(loglik) + loglik / temperature
        return scores - scores.logsumexp(-1, keepdim=True)


class UniformRouter(Router):
    name = "uniform"

    def __init__(self, n_experts: int):
        super().__init__(n_experts)

    @classmethod
    def from_config(cls, config, folder: Path | None) -> Router:
        return cls(len(config.experts))


class PosteriorRouter(Router):
    """BTM's Bayesian posterior: prior × the experts' likelihoods of the prefix, every token."""

    name = "posterior"
    per_token = True
    default_temperature = 1.0

    def __init__(self, n_experts: int, prior: list[float] | None = None, temperature: float = 1.0):
        super().__init__(n_experts, prior)
        if temperature <= 0:
            raise XelmError(f"posterior temperature {temperature}: must be > 0")
        self.temperature = temperature

    @classmethod
    def from_config(cls, config, folder: Path | None) -> Router:
        return cls(len(config.experts), config.prior, config.temperature or cls.default_temperature)


class _PrefixRouter(Router):
    reads_prefix = True

    def _texts(self, texts: list[str]) -> list[str]:
        if any(not t.strip() for t in texts):
            raise XelmError(
                f"the {self.name} router reads the prefix's text, and a prefix is "
                "empty: give each sequence some context (a prompt)"
            )
        return texts


class TfidfRouter(_PrefixRouter):
    """c-BTM: embed the prefix with the allocation's TF-IDF + SVD; α ∝ softmax(−d²/T) over the
    squared distances to the cluster centroids (T = 0.1 in c-BTM).

    The distances include the balancing prices the allocation assigned documents with
    (d² + λ_c): routing follows the allocation's own rule, so text goes where documents like it
    went in training (on the tests' corpus, balancing split the small Japanese set 23/22 over
    two clusters; raw distances sent all Japanese to one expert at α 0.83, priced ones 50/50).
    """

    name = "tfidf"
    allocation_method = "tfidf"
    default_temperature = 0.1

    def __init__(
        self,
        n_experts: int,
        state_dir: str | Path,
        expert_clusters: list[int],
        temperature: float = 0.1,
    ):
        from xelm.allocate.tfidf import TfidfClusters

        super().__init__(n_experts)
        self.clusters = TfidfClusters.load(state_dir)
        self.expert_clusters = expert_clusters
        self.temperature = temperature

    @classmethod
    def from_config(cls, config, folder: Path | None) -> Router:
        state = None if folder is None else folder / ROUTER_DIR / "tfidf"
        if state is None or not state.exists():
            raise XelmError(
                f"{folder}: the tfidf router needs the allocation's TF-IDF state "
                f"({ROUTER_DIR}/tfidf); build the ensemble with a TF-IDF allocation"
            )
        return cls(
            len(config.experts),
            state,
            config.expert_clusters,
            config.temperature or cls.default_temperature,
        )

    def route(self, texts: list[str]) -> torch.Tensor:
        import torch

        d2 = self.clusters.squared_distances(self._texts(texts)) + self.clusters.prices[None]
        scores = -torch.from_numpy(d2).float()[:, self.expert_clusters] / self.temperature
        return scores - scores.logsumexp(-1, keepdim=True)


class LanguageRouter(_PrefixRouter):
    """Identify the prefix's language (langid.py, offline) and route to the expert whose cluster
    holds it; a language no expert holds → None, i.e. the posterior decides."""

    name = "lid"

    def __init__(self, n_experts: int, language_to_expert: dict[str, int]):
        super().__init__(n_experts)
        self.language_to_expert = language_to_expert
        self.identifier = _language_identifier()

    @classmethod
    def from_config(cls, config, folder: Path | None) -> Router:
        if not config.language_to_expert:
            raise XelmError("the lid router needs language_to_expert (from the allocation)")
        return cls(len(config.experts), config.language_to_expert)

    def identify(self, text: str) -> str:
        return self.identifier.classify(text)[0]

    def identify_each(self, texts: list[str]) -> list[str]:
        """`identify` of many texts, their naive-Bayes scores in one matrix product (langid.py
        classifies one text at a time, and its per-text product was most of routing's time);
        the same argmax as its `classify` (normalising the scores keeps their order)."""
        import numpy as np

        ident, out = self.identifier, []
        for start in range(0, len(texts), 512):  # 512 × 7,480 features: 30 MB as float64
            features = np.stack([ident.instance2fv(t) for t in texts[start : start + 512]])
            scores = features @ ident.nb_ptc + ident.nb_pc
            out += [str(ident.nb_classes[i]) for i in scores.argmax(1)]
        return out

    def route(self, texts: list[str]) -> torch.Tensor | None:
        import torch

        each = self.route_each(texts)
        if any(a is None for a in each):
            return None
        return torch.stack(each) if each else torch.empty(0, len(self.log_prior))

    def route_each(self, texts: list[str]) -> list[torch.Tensor | None]:
        import torch

        langs = self.identify_each(self._texts(texts))
        experts = [self.language_to_expert.get(lang) for lang in langs]
        one_hot = torch.full((len(self.log_prior),), -math.inf)
        return [None if e is None else one_hot.index_fill(0, torch.tensor(e), 0.0) for e in experts]


@functools.cache
def _language_identifier():
    """langid.py's model, unpacked once per process (1.2 s: a pipeline loads many ensembles)."""
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


# The routers by name: the one list the config, the CLI and the ensemble read.
ROUTERS: dict[str, type[Router]] = {
    r.name: r for r in (UniformRouter, Router, PosteriorRouter, TfidfRouter, LanguageRouter)
}


class RouterChoice(Spec):
    """One way to set the ensemble's α, evaluated for every allocation it applies to."""

    router: str = "posterior"
    """uniform, prior (BTM's cached prior), posterior (over the prefix, every token), tfidf
    (c-BTM, TF-IDF allocations only) or lid (language ID)"""
    top_k: int | None = Field(None, ge=1)
    """keep the k largest α (routers fixed per document: the others are not run)"""
    temperature: float | None = Field(None, gt=0)
    """the router's temperature (default: posterior 1, tfidf 0.1)"""
    route_on: Literal["head", "recent", "prefix"] = "head"
    """routers fixed per document (tfidf, lid, posterior top-k) read its head, or re-route
    before every evaluation window from the window's own context (recent: the router follows
    the document; the posterior reads its last `route_tokens` tokens) or from all the
    document before it (prefix: tfidf, lid)"""
    window: int | None = Field(None, ge=1)
    """per-token posteriors (the posterior without top_k, the fallback's weight) read only
    the last `window` tokens, so they can change their mind (none: all tokens so far)"""
    fallback: bool = False
    """mix the ensemble's fallback model (the seed) in, token by token, weighted by its
    posterior against the routed experts: one more model run per token"""
    head_tokens: int | None = Field(None, ge=1)
    """how many of a document's first tokens are scored before anything routes it (by the
    posterior over all experts, or the fallback alone when it is mixed in) and routed on
    (default: the ensembles' `route_tokens`). Fewer: less text scored without an expert,
    but a router that reads text has less of it for the first window"""

    @field_validator("router")
    @classmethod
    def _known(cls, name: str) -> str:
        return one_of(name, ROUTERS, "router")

    @property
    def name(self) -> str:
        top = f"-top{self.top_k}" if self.top_k else ""
        temp = f"-T{self.temperature:g}" if self.temperature is not None else ""
        on = f"-{self.route_on}" if self.route_on != "head" else ""
        window = f"-w{self.window}" if self.window is not None else ""
        head = f"-h{self.head_tokens}" if self.head_tokens is not None else ""
        fallback = "+seed" if self.fallback else ""
        return f"{self.router}{top}{temp}{on}{window}{head}{fallback}"

    def settings(self) -> dict:
        """The keyword arguments `xelm.evaluate.Evaluator` takes for this choice."""
        return {
            "router": self.router,
            "top_experts": self.top_k,
            "temperature": self.temperature,
            "route_on": self.route_on,
            "window": self.window,
            "fallback": self.fallback,
            **({"route_tokens": self.head_tokens} if self.head_tokens is not None else {}),
        }

    def applies_to(self, method: str | None) -> bool:
        """Whether this router can route experts of an allocation made by `method`."""
        needs = ROUTERS[self.router].allocation_method
        return needs is None or needs == method
