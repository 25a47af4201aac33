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
        **kwargs,
    ) -> None:
        from xelm.ensemble import XELMForCausalLM

        model = XELMForCausalLM.from_pretrained(
            pretrained,
            router=router,
            top_experts=top_k,
            temperature=temperature,
            trust_external_experts=bool(trust_external_experts),
        ).eval()
        kwargs.pop("tokenizer", None)
        device = kwargs.pop("device", None)
        if device:
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
        out = []
        for i in range(0, len(contexts), self.batch_size):
            ids, mask = _right_padded(contexts[i : i + self.batch_size], dev)
            if router.per_token:  # the posterior after the whole context, then its top-k
                with model.routing(model.posterior_router(), None):
                    _, posterior = model.score(ids, mask, mask.bool(), return_posterior=True)
                out += list(top_k(posterior.float(), model.config.top_experts))
            else:
                out += list(model.route(ids, mask))
        return out

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """HFLM's algorithm (one row per request: context + continuation, truncated from the
        left to the window, longest first, right-padded batches), each row with the α its
        context was routed to; rows routed to the same expert are batched together."""
        contexts = list(dict.fromkeys(tuple(r[1]) for r in requests))
        autocast = torch.autocast(
            self.device.type,
            dtype=self.mixed_precision_dtype or torch.bfloat16,
            enabled=self.mixed_precision_dtype is not None,
        )
        with autocast:
            alpha = dict(zip(contexts, self._route([list(c) for c in contexts]), strict=True))

            def key(i: int) -> tuple[int, int]:  # rows of one expert together, longest first
                a = alpha[tuple(requests[i][1])]
                return (0 if a is None else int(a.argmax())), -len(requests[i][1] + requests[i][2])

            order = sorted(range(len(requests)), key=key)
            results: list = [None] * len(requests)
            bar = tqdm(total=len(requests), disable=disable_tqdm, desc="xelm loglikelihood")
            for b in range(0, len(order), self.batch_size):
                batch = order[b : b + self.batch_size]
                scored = self._score_rows([requests[i] for i in batch], alpha)
                for i, one in zip(batch, scored, strict=True):
                    results[i] = one
                bar.update(len(batch))
            bar.close()
        return results

    def _score_rows(self, requests, alpha) -> list[tuple[float, bool]]:
        dev = self.device
        rows = [
            (list(ctx) + list(cont))[-(self.max_length + 1) :][:-1] for _, ctx, cont in requests
        ]
        ids, mask = _right_padded(rows, dev)
        weights = [alpha[tuple(ctx)] for _, ctx, _ in requests]
        log_alpha = None if weights[0] is None else torch.stack(weights).to(dev)
        logp = self.ensemble(ids, attention_mask=mask, expert_log_weights=log_alpha).logits
        scored = []
        for r, ((_, _, cont), row) in enumerate(zip(requests, rows, strict=True)):
            target = torch.tensor(cont, device=dev)
            lp = logp[r, len(row) - len(cont) : len(row)].float()
            scored.append(
                (lp.gather(-1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all()))
            )
        return scored


def _right_padded(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the right (a causal model's real tokens never read the padding)."""
    longest = max(map(len, rows))
    ids = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return ids.to(device), mask.to(device)
