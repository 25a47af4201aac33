"""An lm-evaluation-harness model class for X-ELM ensembles (`--model xelm`).

It is lm-eval's own `HFLM` with one method replaced: the log-likelihood of a continuation is the
mixture's, `log Σ_e α_e p_e(x_t | x_<t)`, with α decided by the ensemble's router from the
**context** only (the prompt with its demonstrations). Prompts are encoded, truncated and
batched exactly as for an HF model, so a dense model scored by `--model hf` sees the same tokens.

Routing is decided once per distinct context:
- prefix routers (lid, tfidf) and fixed α (prior, uniform): from the context's text, then only
  the experts in use run on each row;
- the posterior with `top_k`: the posterior over the context (every expert reads each context
  once), then its top-k experts score the continuations;
- the posterior without `top_k`: α updated at every token, every expert runs (k× the cost).

lm-eval 0.4 has no plugin entry point for models, so the class is registered on import:
`python -m xelm.lm_eval run --model xelm --model_args pretrained=ENSEMBLE,router=lid ...`
is lm-eval's own command line with this class known.
"""

from __future__ import annotations

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from xelm.ensemble.routers import top_k


@register_model("xelm")
class XELMLM(HFLM):
    def __init__(
        self,
        pretrained: str,
        router: str | None = None,
        top_k: int | None = None,
        temperature: float | None = None,
        trust_external_experts: bool = False,
        fallback: bool | str = False,
        window: int | None = None,
        **kwargs,
    ) -> None:
        from xelm.ensemble import XELMForCausalLM

        model = XELMForCausalLM.from_pretrained(
            pretrained,
            router=router,
            top_experts=top_k,
            temperature=temperature,
            trust_external_experts=_flag(trust_external_experts),
            use_fallback=_flag(fallback),
            window=int(window) if window is not None else None,
        ).eval()
        kwargs.pop("tokenizer", None)
        device = kwargs.pop("device", None)  # lm-eval's CLI passes "cuda" unless told
        if device and (not str(device).startswith("cuda") or torch.cuda.is_available()):
            model = model.to(device)
        # the experts' window (an ensemble's config has none; HFLM would assume 2048)
        kwargs.setdefault("max_length", model.experts[0].config.max_position_embeddings)
        super().__init__(pretrained=model, tokenizer=model.tokenizer, backend="causal", **kwargs)
        self.ensemble = model

    def _route(self, contexts: list[list[int]]) -> list[torch.Tensor | None]:
        """log α (experts,) of each context for its continuations; None: α per token."""
        model, dev = self.ensemble, self.device
        router = model.router
        if router.per_token and not model.config.top_experts:
            return [None] * len(contexts)
        routed: list[torch.Tensor | None] = [None] * len(contexts)
        if not router.per_token:  # a prefix router or fixed α, one context at a time
            for i, ctx in enumerate(contexts):
                a = model.route(torch.tensor([ctx], device=dev))
                routed[i] = None if a is None else top_k(a[0].float(), model.config.top_experts)
        # the posterior after the whole context, then its top-k (also where a prefix router
        # abstains: LID on a language no expert holds)
        rest = [i for i, a in enumerate(routed) if a is None]
        for b in range(0, len(rest), self.batch_size):
            rows = rest[b : b + self.batch_size]
            ids, mask = _right_padded([contexts[i] for i in rows], dev)
            with model.routing(model.posterior_router(), None):
                _, posterior = model.score(ids, mask, mask.bool(), return_posterior=True)
            for i, a in zip(rows, top_k(posterior.float(), model.config.top_experts), strict=True):
                routed[i] = a
        return routed

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """HFLM's algorithm (the window is context + continuation minus its last token,
        truncated from the left; longest first; right-padded batches), each row with the α its
        context was routed to. Requests with the same window share one row (options of one
        token after the same context: a topic label), and rows routed to the same expert are
        batched together."""
        contexts = list(dict.fromkeys(tuple(r[1]) for r in requests))
        windows: dict[tuple, list[int]] = {}  # (context, window) → the requests it scores
        for i, (_, ctx, cont) in enumerate(requests):
            window = (list(ctx) + list(cont))[-(self.max_length + 1) :][:-1]
            windows.setdefault((tuple(ctx), tuple(window)), []).append(i)
        autocast = torch.autocast(
            self.device.type,
            dtype=self.mixed_precision_dtype or torch.bfloat16,
            enabled=self.mixed_precision_dtype is not None,
        )
        results: list = [None] * len(requests)
        with autocast:
            alpha = dict(zip(contexts, self._route([list(c) for c in contexts]), strict=True))

            def order(item) -> tuple[int, int]:  # one expert's rows together, longest first
                (ctx, window), _ = item
                a = alpha[ctx]
                return (0 if a is None else int(a.argmax())), -len(window)

            rows = sorted(windows.items(), key=order)
            bar = tqdm(total=len(requests), disable=disable_tqdm, desc="xelm loglikelihood")
            for b in range(0, len(rows), self.batch_size):
                batch = rows[b : b + self.batch_size]
                ids, mask = _right_padded([list(window) for (_, window), _ in batch], self.device)
                weights = [alpha[ctx] for (ctx, _), _ in batch]
                log_alpha = None if weights[0] is None else torch.stack(weights)
                logp = self.ensemble(ids, attention_mask=mask, expert_log_weights=log_alpha).logits
                for r, ((_, window), members) in enumerate(batch):
                    for i in members:
                        results[i] = _score(logp[r], len(window), requests[i][2])
                    bar.update(len(members))
            bar.close()
        return results


def _score(logp: torch.Tensor, length: int, cont: list[int]) -> tuple[float, bool]:
    """(log p of the continuation, whether greedy decoding gives it) from one row's log-probs;
    the continuation's tokens are the window's last ones, then its final token."""
    target = torch.tensor(cont, device=logp.device)
    lp = logp[length - len(cont) : length].float()
    return lp.gather(-1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all())


def _right_padded(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the right (a causal model's real tokens never read the padding)."""
    longest = max(map(len, rows))
    ids = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _flag(value: bool | str) -> bool:
    """A boolean from Python or from lm-eval's `--model_args key=value` strings."""
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)
