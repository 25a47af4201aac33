"""`XELMForCausalLM`: k experts sharing one tokenizer, mixed in probability space.

`logits` are the mixture's log-probabilities, `logsumexp_e(log α_e + log_softmax(z_e))`, so
`softmax(logits)` is the mixture and the loss, perplexity and `generate()` (greedy, sampling,
beam search) of transformers work unchanged. Each expert keeps its own KV cache.

An ensemble folder holds `config.json` (experts by path relative to the folder, the router and
its settings), the tokenizer, the router's state and the experts themselves, as plain HF folders
under `experts/`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from xelm.ensemble.routers import (
    ROUTER_DIR,
    ROUTERS,
    PosteriorRouter,
    Router,
    check_log_weights,
    top_k,
)
from xelm.errors import XelmError
from xelm.models import check_same_architecture, next_token_logp
from xelm.paths import atomic_dir, inside

FALLBACK_DIR = "fallback"  # in an ensemble folder: the model beside the experts (the seed)


class XELMConfig(PretrainedConfig):
    model_type = "xelm"

    def __init__(
        self,
        experts: list[str] | None = None,  # expert folders, relative to the ensemble folder
        expert_clusters: list[int] | None = None,  # the allocation's cluster of each expert
        router: str = "posterior",
        top_experts: int | None = None,
        prior: list[float] | None = None,
        temperature: float | None = None,  # posterior: 1; tfidf: 0.1
        language_to_expert: dict[str, int] | None = None,  # lid router
        vocab_size: int = 0,
        fallback: str | None = None,  # a model folder (the seed), relative to the ensemble's
        use_fallback: bool = False,  # mix it in, token by token
        fallback_weight: float = 0.5,  # its prior weight in that two-member posterior
        window: int | None = None,  # per-token posteriors read only the last `window` tokens
        **kwargs,
    ):
        self.experts = list(experts or [])
        self.expert_clusters = list(expert_clusters or range(len(self.experts)))
        self.router = router
        self.top_experts = top_experts
        self.prior = prior
        self.temperature = temperature
        self.language_to_expert = dict(language_to_expert or {})
        self.vocab_size = vocab_size
        self.fallback = fallback
        self.use_fallback = use_fallback
        self.fallback_weight = fallback_weight
        self.window = window
        super().__init__(**kwargs)


@dataclass
class XELMCache:
    """Generation state: one KV cache per expert (None: the expert is not run), the routing
    fixed for the sequence (or None: per-token posterior), the posterior's running
    log-likelihoods and the last log-probabilities, which score the next token fed in."""

    experts: list
    log_alpha: torch.Tensor | None = None  # (batch, experts), fixed
    rows: list[torch.Tensor | None] = field(default_factory=list)  # rows each expert runs on
    loglik: torch.Tensor | None = None  # (batch, experts)
    last_logp: torch.Tensor | None = None  # (batch, experts, vocab)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return next(c.get_seq_length() for c in self.experts if c is not None)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: rows move among the beams of one input, which share their routing."""
        for e, c in enumerate(self.experts):
            if c is None:
                continue
            rows = self.rows[e]
            if rows is None:
                c.reorder_cache(beam_idx)
            else:
                c.reorder_cache(torch.searchsorted(rows, beam_idx[rows]))
        for name in ("log_alpha", "loglik", "last_logp"):
            if (t := getattr(self, name)) is not None:
                setattr(self, name, t[beam_idx])


class XELMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = XELMConfig
    base_model_prefix = "xelm"
    main_input_name = "input_ids"

    def __init__(
        self,
        config: XELMConfig,
        experts: list[PreTrainedModel] | None = None,
        router: Router | None = None,
        tokenizer=None,
        fallback: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        if not experts:
            raise XelmError("an ensemble needs at least one expert model")
        self.experts = nn.ModuleList(experts)
        self.fallback = fallback  # a model beside the experts (the seed) the mixture can lean on
        self.router = router or make_router(config, None)
        self.tokenizer = tokenizer
        self.source: Path | None = None  # the folder it was loaded from (its router state)
        self.forward_calls = [0] * len(experts)  # per expert: how often it ran (tests, stats)
        self.tokens_run = 0  # token positions all models together ran on: the compute spent
        self.post_init()

    @property
    def mixes_fallback(self) -> bool:
        if not self.config.use_fallback:
            return False
        if self.fallback is None:
            raise XelmError(
                "this ensemble has no fallback model: build it with `xelm ensemble build "
                "--fallback SEED` to mix the seed in"
            )
        return True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # our own per-expert caches (XELMCache), built in forward

    # --- routing ---------------------------------------------------------------------------

    def route(
        self,
        prefix_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        router: Router | None = None,
    ):
        """Fixed log α per sequence from its prefix, or None (per-token posterior)."""
        r = router or self.router
        if r.per_token:
            return None
        if not r.reads_prefix:
            return r.fixed(prefix_ids.shape[0]).to(prefix_ids.device)
        if self.tokenizer is None:
            raise XelmError(f"the {r.name} router reads text: the ensemble needs its tokenizer")
        rows = (
            prefix_ids
            if attention_mask is None
            else [ids[m.bool()] for ids, m in zip(prefix_ids, attention_mask, strict=True)]
        )
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        log_alpha = r.route(texts)
        return None if log_alpha is None else log_alpha.to(prefix_ids.device)

    @contextlib.contextmanager
    def routing(self, router: Router, top_experts: int | None):
        """Temporarily route with another router (e.g. the posterior over a document's head)."""
        saved = self.router, self.config.top_experts
        self.router, self.config.top_experts = router, top_experts
        try:
            yield self
        finally:
            self.router, self.config.top_experts = saved

    def posterior_router(self) -> PosteriorRouter:
        """The posterior with this ensemble's prior (the fallback of the prefix routers)."""
        return PosteriorRouter(
            len(self.experts),
            self.config.prior,
            (self.config.temperature or 1.0) if self.config.router == "posterior" else 1.0,
        )

    # --- forward -----------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: XELMCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        expert_log_weights: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`expert_log_weights` (batch, experts) fixes α for the call (e.g. routed on a context
        the caller holds); otherwise the router decides: on the first call of a sequence from
        its tokens (the prompt), then kept in the cache."""
        k = len(self.experts)
        first = not isinstance(cache, XELMCache)
        fallback = self.mixes_fallback
        if (self.config.window is not None or fallback) and (use_cache or not first):
            raise XelmError(
                "a windowed posterior and the fallback model score whole sequences (xelm eval, "
                "score(), a forward without cache); load the ensemble without them to generate"
            )
        if first:
            log_alpha = expert_log_weights
            if log_alpha is None:
                log_alpha = self.route(input_ids, attention_mask)
            if log_alpha is not None:
                check_log_weights(log_alpha, "expert_log_weights")
                log_alpha = top_k(log_alpha.float(), self.config.top_experts)
            cache = XELMCache([None] * k, log_alpha, [None] * k)
            if log_alpha is None:
                cache.loglik = input_ids.new_zeros((input_ids.shape[0], k), dtype=torch.float)
        use_cache = bool(use_cache)

        if cache.log_alpha is not None:
            logp = self._fixed_mixture(
                input_ids, attention_mask, position_ids, cache, use_cache, first
            )
        else:
            logp = self._posterior_mixture(
                input_ids, attention_mask, position_ids, cache, use_cache
            )
        if fallback:
            logp = self._with_fallback(logp, input_ids, attention_mask, position_ids)
        loss = None
        if labels is not None:
            loss = nn.functional.nll_loss(
                logp[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        if logits_to_keep:
            logp = logp[:, -logits_to_keep:]
        return CausalLMOutputWithPast(loss=loss, logits=logp, cache=cache if use_cache else None)

    def _run(
        self, e: int, rows, input_ids, attention_mask, position_ids, cache, use_cache, where=None
    ):
        """Logits (fp32) of expert `e` (or, e = -1, the fallback model) on `rows` of the batch;
        with `where` (those rows' positions), only the log p of each next token there (`score`)."""
        sel = lambda t: t if rows is None or t is None else t[rows]  # noqa: E731
        model = self.fallback if e == -1 else self.experts[e]
        if use_cache and cache.experts[e] is None:
            from transformers import DynamicCache

            cache.experts[e] = DynamicCache(config=self.experts[e].config)
        if e >= 0:
            self.forward_calls[e] += 1
        mask = sel(attention_mask)
        self.tokens_run += int(mask.sum()) if mask is not None else sel(input_ids).numel()
        if where is not None:
            return next_token_logp(model, sel(input_ids), mask, where, sel(position_ids))
        out = model(
            input_ids=sel(input_ids),
            attention_mask=mask,
            position_ids=sel(position_ids),
            use_cache=use_cache,
            cache=cache.experts[e] if use_cache else None,
        )
        return out.logits.float()

    def _fixed_mixture(self, input_ids, attention_mask, position_ids, cache, use_cache, first):
        """α fixed per sequence: experts with zero weight for every row are not run, and the
        others only on the rows that use them."""
        args = (input_ids, attention_mask, position_ids, cache, use_cache)
        parts = self._expert_parts(
            cache, first, lambda e, rows: self._run(e, rows, *args).log_softmax(-1)
        )
        return self._combine(parts, input_ids.shape[0])

    def _expert_parts(self, cache, first, run):
        """[(rows or None, log α of those rows, run(e, rows))] for the experts some row uses."""
        log_alpha = cache.log_alpha
        active = [e for e in range(len(self.experts)) if torch.isfinite(log_alpha[:, e]).any()]
        if first:
            for e in active:
                used = torch.isfinite(log_alpha[:, e])
                cache.rows[e] = None if used.all() else used.nonzero().flatten()
        parts = []
        for e in active:
            rows = cache.rows[e]
            weight = log_alpha[:, e] if rows is None else log_alpha[rows, e]
            parts.append((rows, weight, run(e, rows)))
        return parts

    @staticmethod
    def _combine(parts, batch: int) -> torch.Tensor:
        """logsumexp over experts of log α + log p, each expert on its rows only."""
        if len(parts) == 1 and parts[0][0] is None:  # one expert for every row: α = 1
            return parts[0][2]
        expand = lambda w, x: w.view(-1, *[1] * (x.dim() - 1))  # noqa: E731
        if all(rows is None for rows, _, _ in parts):
            return torch.stack([x + expand(w, x) for _, w, x in parts]).logsumexp(0)
        shape = parts[0][2].shape[1:]
        out = parts[0][2].new_full((batch, *shape), -math.inf)
        for rows, w, x in parts:
            if rows is None:
                out = torch.logaddexp(out, x + expand(w, x))
            else:
                out[rows] = torch.logaddexp(out[rows], x + expand(w, x))
        return out

    def _with_fallback(self, logp, input_ids, attention_mask, position_ids):
        """The mixture and the fallback, weighted token by token by their windowed posterior
        (as `score`), over the whole vocabulary."""
        fb = self._run(-1, None, input_ids, attention_mask, position_ids, None, False)
        members = torch.stack([logp, fb.log_softmax(-1)], dim=2)  # (batch, time, 2, vocab)
        nxt = torch.nn.functional.pad(input_ids[:, 1:], (0, 1))[:, :, None, None]
        next_lp = members.gather(-1, nxt.expand(-1, -1, 2, 1)).squeeze(-1)  # (batch, time, 2)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return (self._fallback_beta(next_lp, mask)[..., None] + members).logsumexp(2)

    def _posterior_mixture(self, input_ids, attention_mask, position_ids, cache, use_cache):
        """α_e(t) ∝ prior_e · p_e(x_≤t)^(1/T), updated every token: every expert runs."""
        args = (input_ids, attention_mask, position_ids, cache, use_cache)
        logps = torch.stack(
            [self._run(e, None, *args).log_softmax(-1) for e in range(len(self.experts))], dim=2
        )
        k = logps.shape[2]
        # (batch, time, experts, vocab). Log-likelihood of each input token under each expert:
        # token t is scored by position t-1 (or by the last step's prediction, kept in the cache)
        prev = logps[:, :-1].gather(-1, input_ids[:, 1:, None, None].expand(-1, -1, k, 1))
        token_ll = prev.squeeze(-1)  # (batch, time-1, experts)
        if cache.last_logp is not None:
            first_ll = cache.last_logp.gather(-1, input_ids[:, :1, None].expand(-1, k, 1))
            token_ll = torch.cat([first_ll.transpose(1, 2), token_ll], dim=1)
        else:  # the sequence's first token: nothing predicted it
            token_ll = torch.cat([token_ll.new_zeros(token_ll.shape[0], 1, k), token_ll], dim=1)
        if attention_mask is not None:  # padding tells nothing about the experts
            mask = attention_mask[:, -input_ids.shape[1] :].to(token_ll.dtype)
            token_ll = token_ll * mask[:, :, None]
        loglik = cache.loglik[:, None, :] + token_ll.cumsum(1)  # through token t
        loglik = last_window(loglik, self.config.window)  # no cache with a window: see forward
        router = self.router
        temperature = getattr(router, "temperature", 1.0) or 1.0
        log_alpha = top_k(router.posterior(loglik, temperature), self.config.top_experts)
        cache.loglik = loglik[:, -1]
        cache.last_logp = logps[:, -1]
        return (log_alpha[..., None] + logps).logsumexp(2)

    @torch.no_grad()
    def score(
        self,
        input_ids,
        attention_mask,
        score_mask,
        expert_log_weights: torch.Tensor | None = None,
        return_posterior: bool = False,
        fallback_only: torch.Tensor | None = None,
    ):
        """log p(x_{t+1} | x_≤t) of the mixture at the positions of `score_mask` (batch, time),
        flattened: what an evaluator needs. Only the experts' log-partition and the target's
        logit are needed per expert (the mixture's full distribution never is), so this costs
        what scoring each expert alone costs.

        With the fallback model mixed in (`config.use_fallback`), the routed mixture and the
        fallback are weighted token by token by their posterior over the tokens before
        (the last `config.window` of them): where the text is unlike the experts' clusters,
        the weight moves to the model that kept every language. `fallback_only` (batch, time):
        positions the fallback scores alone (a document's head, before anything routed it).

        `return_posterior` (per-token posterior only): also the experts' posterior log α
        (batch, experts) after every scored token, e.g. to route the rest of a document by its
        head."""
        k = len(self.experts)
        fallback = self.mixes_fallback
        seen_mask = torch.ones_like(score_mask) if attention_mask is None else attention_mask.bool()
        # token-by-token weights read the members' log p of the tokens before each scored one
        reads = seen_mask & reaches(score_mask, self.config.window)

        def target_logp(e, rows, where=score_mask):  # (rows, time): log p of the next token
            where = where if rows is None else where[rows]  # 0 where not asked (never read)
            return self._run(e, rows, input_ids, attention_mask, None, None, False, where=where)

        log_alpha = expert_log_weights
        if log_alpha is None:
            log_alpha = self.route(input_ids, attention_mask)
        if log_alpha is not None:  # fixed per sequence: only the experts in use run
            check_log_weights(log_alpha, "expert_log_weights")
            cache = XELMCache(
                [None] * k, top_k(log_alpha.float(), self.config.top_experts), [None] * k
            )
            where = reads if fallback else score_mask  # the fallback's weight reads those
            parts = self._expert_parts(cache, True, lambda e, rows: target_logp(e, rows, where))
            mixture = self._combine(parts, input_ids.shape[0])
            if fallback:
                fb = target_logp(-1, None, reads)
                mixture = self._fallback_mixture(mixture, fb, reads, fallback_only)
            return mixture[score_mask]
        # the posterior: α(t) from the likelihood of x_≤t, every expert at every token
        lp = torch.stack([target_logp(e, None, reads) for e in range(k)], dim=-1)  # (b,t,e)
        temperature = getattr(self.router, "temperature", 1.0) or 1.0
        log_prior = self.router.log_prior.to(lp)
        log_alpha = top_k(
            windowed_posterior(lp, reads, log_prior, temperature, self.config.window),
            self.config.top_experts,
        )
        mixture = (log_alpha + lp).logsumexp(-1)
        if fallback:
            fb = target_logp(-1, None, reads)
            mixture = self._fallback_mixture(mixture, fb, reads, fallback_only)
        if not return_posterior:
            return mixture[score_mask]
        scored = (lp * score_mask[:, :, None].to(lp.dtype)).sum(1)
        return mixture[score_mask], self.router.posterior(scored, temperature)

    def _fallback_mixture(self, mixture, fallback, mask, fallback_only=None):
        """β p_mixture + (1−β) p_fallback of each next token (batch, time), β their posterior
        over the last `window` tokens; `fallback_only` positions: the fallback's alone."""
        members = torch.stack([mixture, fallback], dim=-1)
        mixed = (self._fallback_beta(members, mask) + members).logsumexp(-1)
        if fallback_only is not None:
            mixed = torch.where(fallback_only, fallback, mixed)
        return mixed

    def _fallback_beta(self, next_lp, mask):
        """log (β, 1−β) per position from the two members' log p of each next token
        (batch, time, 2): their posterior over the last `window` tokens, prior 1−w : w."""
        w = self.config.fallback_weight
        log_prior = next_lp.new_tensor([1 - w, w]).log()
        return windowed_posterior(next_lp, mask, log_prior, 1.0, self.config.window)

    # --- generation plumbing -----------------------------------------------------------------

    def prepare_inputs_for_generation(
        self, input_ids, cache=None, attention_mask=None, next_sequence_length=None, **kwargs
    ):
        if isinstance(cache, XELMCache):
            input_ids = input_ids[:, -1:]
        position_ids = None
        if attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = position_ids[:, -input_ids.shape[1] :]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "cache": cache,
            "use_cache": kwargs.get("use_cache", True),
        }

    def get_input_embeddings(self):
        return self.experts[0].get_input_embeddings()

    # --- folders -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path,
        *args,
        router: str | None = None,
        top_experts: int | None = None,
        temperature: float | None = None,
        trust_external_experts: bool = False,
        use_fallback: bool | None = None,
        window: int | None = None,
        **kwargs,
    ):
        """Load an ensemble folder; `router`/`top_experts`/`temperature`/`use_fallback`/
        `window` override the saved choice (another router starts from its own default
        temperature). Experts are loaded only from inside the folder unless
        `trust_external_experts`: a downloaded or shared ensemble cannot make us read models
        from anywhere else on the disk."""
        from xelm.models import load_model
        from xelm.tokenizer import load_tokenizer

        path = Path(path)
        if not (path / "config.json").exists():
            raise XelmError(
                f"{path}: not an ensemble folder (no config.json); build one with "
                "`xelm ensemble build`"
            )
        config = XELMConfig.from_pretrained(path)
        if config.model_type != "xelm" or not config.experts:
            raise XelmError(f"{path}: config.json is not an X-ELM ensemble")
        if router is not None and router != config.router:
            config.router, config.temperature = router, None
        if temperature is not None:
            config.temperature = temperature
        if top_experts is not None:
            config.top_experts = top_experts
        if use_fallback is not None:
            config.use_fallback = use_fallback
        if window is not None:
            config.window = window
        experts = [load_model(f) for f in expert_paths(path, config, trust_external_experts)]
        names = list(config.experts)
        fallback = None
        if config.fallback:
            fallback = load_model(expert_paths(path, config, False, [config.fallback])[0])
            experts, names = [*experts, fallback], [*names, config.fallback]
        check_experts(experts, names)
        if fallback is not None:
            experts = experts[:-1]
        tokenizer = load_tokenizer(path)
        model = cls(config, experts, make_router(config, path), tokenizer, fallback)
        model.source = path
        return model.eval()

    def save_pretrained(self, out, **kwargs):
        """Write a self-contained ensemble folder: config, tokenizer, the router's state (of
        the folder this ensemble was loaded from) and every expert under `experts/`."""
        from xelm.ensemble.build import inner_names
        from xelm.models import save_model

        if self.tokenizer is None:
            raise XelmError("an ensemble is saved with its tokenizer: pass tokenizer= to it")
        out = Path(out)
        config = copy.deepcopy(self.config)
        config.experts = inner_names([Path(rel) for rel in self.config.experts])
        with atomic_dir(out) as tmp:
            for expert, name in zip(self.experts, config.experts, strict=True):
                save_model(expert, self.tokenizer, tmp / name)
            if self.fallback is not None:
                config.fallback = FALLBACK_DIR
                save_model(self.fallback, self.tokenizer, tmp / FALLBACK_DIR)
            config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            if self.source is not None and (self.source / ROUTER_DIR).is_dir():
                shutil.copytree(self.source / ROUTER_DIR, tmp / ROUTER_DIR)


def windowed_posterior(
    lp: torch.Tensor,
    mask: torch.Tensor,
    log_prior: torch.Tensor,
    temperature: float = 1.0,
    window: int | None = None,
) -> torch.Tensor:
    """log α(t) ∝ log prior + Σ log p_m(x_s | x_<s) / T over the tokens s ≤ t (the last
    `window` of them, so the weights can change their mind), from `lp` (batch, time, members):
    each member's log p of the *next* token at every position. α(t) weighs the prediction of
    x_{t+1}, so it never saw the token it scores."""
    seen = torch.cat([lp.new_zeros(lp.shape[0], 1, lp.shape[2]), lp[:, :-1]], dim=1)
    seen = seen * mask[:, :, None].to(seen.dtype)  # padding tells nothing about the members
    loglik = last_window(seen.cumsum(1), window)
    scores = log_prior.to(loglik) + loglik / temperature
    return scores - scores.logsumexp(-1, keepdim=True)


def reaches(score_mask: torch.Tensor, window: int | None) -> torch.Tensor:
    """Positions (batch, time) that a windowed posterior at some scored position reads: the
    scored ones and the `window` before each (every position before, without a window)."""
    if window is None:  # a running sum from the start: everything up to the last scored one
        return score_mask.flip(1).cumsum(1).flip(1) > 0
    scored = score_mask.long().cumsum(1)  # scored positions up to each
    last = scored.shape[1] - 1
    ahead = torch.arange(last + 1, device=scored.device).add(window).clamp(max=last)
    return scored[:, ahead] - nn.functional.pad(scored, (1, 0))[:, :-1] > 0


def last_window(cumulative: torch.Tensor, window: int | None) -> torch.Tensor:
    """From running sums over time (dim 1), the sums over the last `window` steps only."""
    if window is None or window >= cumulative.shape[1]:
        return cumulative
    return cumulative - torch.nn.functional.pad(cumulative, (0, 0, window, 0))[:, :-window]


def expert_paths(
    folder: Path, config: XELMConfig, trust_external: bool = False, names: list[str] | None = None
) -> list[Path]:
    """The expert folders an ensemble's config names (or `names`): each must exist, and lie
    inside the ensemble's folder unless `trust_external`."""
    paths = []
    for rel in config.experts if names is None else names:
        path = folder / rel
        if not inside(path, folder) and not trust_external:
            raise XelmError(
                f"{folder}: expert {rel} lies outside the ensemble folder; rebuild it with "
                "`xelm ensemble build` (which places the experts inside), or pass "
                "--trust-external-experts if you trust that folder"
            )
        if not path.exists():
            raise XelmError(f"{folder}: expert folder {rel} is missing ({path.resolve()})")
        paths.append(path)
    return paths


def check_experts(experts: list, names: list[str]) -> None:
    """Experts must share one vocabulary and one architecture family to be mixed."""
    first = experts[0].config
    for model, name in zip(experts[1:], names[1:], strict=True):
        c = model.config
        if c.vocab_size != first.vocab_size:
            raise XelmError(
                f"expert {name}: vocabulary of {c.vocab_size} tokens, but "
                f"{names[0]} has {first.vocab_size}: experts must share one "
                "tokenizer"
            )
    check_same_architecture([m.config for m in experts], names)


def make_router(config: XELMConfig, folder: Path | None) -> Router:
    if config.router not in ROUTERS:
        raise XelmError(f"unknown router {config.router!r}; use one of {', '.join(ROUTERS)}")
    return ROUTERS[config.router].from_config(config, folder)


AutoConfig.register("xelm", XELMConfig, exist_ok=True)
AutoModelForCausalLM.register(XELMConfig, XELMForCausalLM, exist_ok=True)
