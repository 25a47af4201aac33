"""Per-language perplexity and bits per byte of any HF causal LM on held-out documents.

Accounting (so numbers are comparable across tokenizers and scripts):
- each document is scored on its own, preceded by the document separator the model was trained
  with (EOS for xelm models; BOS when a tokenizer has no EOS), and every one of its tokens is
  predicted exactly once;
- documents longer than the context are scored with a sliding window: each window predicts only
  the tokens the previous window did not, with the rest of the window as context;
- bits/byte = total NLL (nats) / ln 2 / UTF-8 bytes of the documents; perplexity is per token of
  the model's own tokenizer. The end-of-document token is not scored (its "text" has no bytes).
"""

from __future__ import annotations

import functools
import itertools
import math
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xelm.corpus import Corpus
from xelm.ensemble.routers import RouterChoice
from xelm.errors import XelmError
from xelm.models import (
    autocast,
    check_vocab,
    load_model,
    logits_at,
    resolve_device,
    to_device,
)


@dataclass
class LangScore:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    nll: float = 0.0  # nats, summed over tokens
    routed: list[int] | None = None  # routed ensembles: documents whose largest α is expert e
    model_tokens: int = 0  # token positions the model(s) ran on, routing included
    window_tokens: int = 0  # ... one model scoring the same documents in the same windows

    @property
    def cost(self) -> float:
        """Model forward passes per token, relative to one model scoring alike (dense = 1)."""
        return self.model_tokens / self.window_tokens if self.window_tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    def to_dict(self) -> dict[str, float]:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return {
            **fields,
            "perplexity": round(self.perplexity, 4),
            "bits_per_byte": round(self.bits_per_byte, 5),
            "cost": round(self.cost, 4),
        }


def windows(
    ids: list[int], context: int, stride: int, skip: int = 0
) -> list[tuple[list[int], int]]:
    """Split `ids` (separator first) into (window, number of trailing tokens to score) pairs so
    that every token after the separator is scored once, each with as much context as fits
    (after the first `skip` tokens, scored elsewhere)."""
    targets = len(ids) - 1
    if targets <= skip:
        return []
    out = []
    end = min(context + 1, len(ids))
    if end - 1 > skip:
        out.append((ids[:end], end - 1 - skip))
    else:  # the skipped head fills the first window: start after it
        end = skip + 1
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        start = max(0, new_end - context - 1)
        out.append((ids[start:new_end], new_end - end))
        end = new_end
    return out


def _separator(tokenizer) -> int:
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if sep is None:
        raise XelmError("the tokenizer has neither an eos nor a bos token to start documents with")
    return sep


@dataclass(frozen=True, eq=False)
class Documents:
    """Test documents as token ids (int64 arrays: windows are views of them, and a batch is
    filled by copies, not per-token Python), each with the separator first, and their UTF-8
    bytes."""

    ids: list[np.ndarray]
    bytes: int

    @property
    def tokens(self) -> int:
        return sum(len(ids) - 1 for ids in self.ids)

    def score(self) -> LangScore:
        """An empty score that counts these documents, tokens and bytes."""
        return LangScore(documents=len(self.ids), tokens=self.tokens, bytes=self.bytes)


def tokenised(tokenizer, texts: list[str]) -> Documents:
    sep = _separator(tokenizer)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    docs = [np.asarray([sep, *i], dtype=np.int64) for i in ids]
    return Documents(docs, sum(len(t.encode("utf-8")) for t in texts))


def held_out_documents(corpus: Corpus, tokenizer, split: str, lang: str, max_docs: int | None):
    """The first `max_docs` documents of a language's split, tokenised once per corpus and
    tokenizer into the token cache training uses (`xelm.tokens`): a pipeline scores every test
    set with many models, and on a GPU tokenising would cost more than scoring."""
    if tokenizer.eos_token_id is None:  # the cache separates documents by EOS
        return tokenised(tokenizer, _texts(corpus, split, lang, max_docs))
    from xelm.tokens import token_streams

    stream = token_streams(corpus, tokenizer, split, [lang])[lang]
    n = min(stream.documents, max_docs or stream.documents)
    offsets, tokens = stream.offsets()[: n + 1], stream.array()
    ids = [tokens[a:b].astype(np.int64) for a, b in itertools.pairwise(offsets)]
    return Documents(ids, int(stream.document_bytes()[:n].sum()))


def _pad(chunk, pad: int, device):
    """Right-padded ids, attention mask and the mask of the positions whose next token is
    scored, for (window, tokens to score, ...) pieces: made on the host with numpy (on a GPU
    the host's time per batch is what the device waits for), then moved."""
    lengths = np.array([len(p[0]) for p in chunk])
    scored = np.array([p[1] for p in chunk])
    ids = np.full((len(chunk), lengths.max()), pad, dtype=np.int64)
    for row, (w, *_) in enumerate(chunk):
        ids[row, : len(w)] = w
    at = np.arange(ids.shape[1])
    mask = (at < lengths[:, None]).astype(np.int64)
    targets = (at[:-1] >= (lengths - 1 - scored)[:, None]) & (at[:-1] < (lengths - 1)[:, None])
    return tuple(to_device(torch.from_numpy(x), device) for x in (ids, mask, targets))


def _score_pieces(model, tokenizer, pieces, batch_size: int, device, on_batch=None) -> float:
    """Summed NLL of (window, tokens to score[, expert log-weights[, head]]) pieces, batched;
    the first `head` targets of a piece are scored by the ensemble's fallback alone.
    `on_batch(n)`: after each batch, with the number of tokens it scored (progress). The sum
    stays on the device until the end: no batch waits for the one before to finish."""
    # similar lengths together (little padding); routed pieces grouped by their top expert, so
    # a batch runs few experts on many rows rather than many on few
    pieces = sorted(pieces, key=lambda p: (int(p[2].argmax()) if len(p) > 2 else 0, len(p[0])))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _separator(tokenizer)
    nll = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(pieces), batch_size):
        chunk = pieces[i : i + batch_size]
        ids, mask, target_mask = _pad(chunk, pad, device)
        scored = F.pad(target_mask, (0, 1))  # position t scores token t + 1
        if hasattr(model, "score"):  # an X-ELM ensemble: the mixture's log p of each target
            weights, solo = None, None
            if len(chunk[0]) > 2:  # per-document routing
                weights = to_device(torch.stack([p[2] for p in chunk]), device)
            if len(chunk[0]) > 3:  # the first h targets of a piece: the fallback's alone
                solo = torch.zeros(target_mask.shape, dtype=torch.bool)  # made on the host
                for row, (w, n, _, h) in enumerate(chunk):
                    solo[row, len(w) - 1 - n : len(w) - 1 - n + h] = True
                solo = to_device(F.pad(solo, (0, 1)), device)
            nll -= model.score(ids, mask, scored, weights, fallback_only=solo).sum().double()
        else:
            # the output layer and the log-softmax only where a row scores the next token;
            # summed by the cross-entropy itself (not `next_token_logp`'s per-token values)
            keep = target_mask.any(0).nonzero().flatten()
            picked = logits_at(model, ids, mask, keep)[target_mask[:, keep]].float()
            nll += F.cross_entropy(picked, ids[:, 1:][target_mask], reduction="sum").double()
        if on_batch is not None:
            on_batch(sum(p[1] for p in chunk))
    return float(nll)


def passes(scores: dict[str, dict[str, float]]) -> float:
    """Model passes per token over every language of an `evaluate_model` result (dense: 1)."""
    ran = sum(s["model_tokens"] for s in scores.values())
    return ran / max(1, sum(s["window_tokens"] for s in scores.values()))


def _window_tokens(docs: list[np.ndarray], context: int, stride: int) -> int:
    return sum(len(w) for ids in docs for w, _ in windows(ids, context, stride))


def score_texts(model, tokenizer, texts: list[str], context: int, stride=None, **how) -> LangScore:
    """Sum of NLL over all tokens of `texts`, each scored as its own document (`how`: the
    keyword arguments of `score_documents`)."""
    docs = tokenised(tokenizer, texts)
    return score_documents(model, tokenizer, docs, context, stride, **how)


@torch.no_grad()
def score_documents(
    model,
    tokenizer,
    documents: Documents,
    context: int,
    stride: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> LangScore:
    """Sum of NLL over all tokens of the documents, every window of every document batched
    together; `on_batch(n)` after every batch, with the tokens it scored."""
    stride = stride or max(1, context // 2)
    score, docs = documents.score(), documents.ids
    pieces = [p for ids in docs for p in windows(ids, context, stride)]
    ran = getattr(model, "tokens_run", None)
    score.nll = _score_pieces(model, tokenizer, pieces, batch_size, device, on_batch)
    score.window_tokens = _window_tokens(docs, context, stride)
    score.model_tokens = score.window_tokens if ran is None else model.tokens_run - ran
    return score


ROUTE_ON = typing.get_args(RouterChoice.model_fields["route_on"].annotation)
"""What a per-document router reads: the document's head (α fixed for the document), or,
before every window, the window's own context (`recent`, so α follows the document) or all
of the document before it (`prefix`)."""


def score_texts_routed(model, tokenizer, texts: list[str], context: int, **how) -> LangScore:
    """`score_documents_routed` of `texts`, each its own document."""
    docs = tokenised(tokenizer, texts)
    return score_documents_routed(model, tokenizer, docs, context, **how)


@torch.no_grad()
def score_documents_routed(
    model,
    tokenizer,
    documents: Documents,
    context: int,
    route_tokens: int = 32,
    stride: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    route_on: str = "head",
    on_batch: Callable[[int], None] | None = None,
) -> LangScore:
    """An ensemble whose α is fixed per window (prefix routers, or top-k of the posterior):
    each document's first `route_tokens` tokens (its head) are scored by the posterior over all
    experts, token by token; then every window is scored with the α its router gives from the
    text before it (`route_on`: the head, the window's context, the whole prefix; top-k: only
    those experts run). No token is scored with α that saw it."""
    router = model.router
    if not router.reads_prefix and not (router.per_token and model.config.top_experts):
        return score_documents(
            model, tokenizer, documents, context, stride, batch_size, device, on_batch
        )
    if route_on not in ROUTE_ON:
        raise XelmError(f"route_on {route_on!r}: use one of {', '.join(ROUTE_ON)}")
    if route_on == "prefix" and not router.reads_prefix:
        raise XelmError(
            "route_on prefix: the posterior over a whole prefix needs every expert at every "
            "token; use the posterior without top_k, or route_on recent"
        )
    stride = stride or max(1, context // 2)
    score, docs = documents.score(), documents.ids
    ran = model.tokens_run
    heads = [(ids[: route_tokens + 1], len(ids[: route_tokens + 1]) - 1) for ids in docs]
    # the head: scored before anything routes it. With a fallback and a prefix router, the
    # fallback scores it alone within the first window (it runs there anyway); otherwise the
    # posterior over all experts, on the head apart
    solo_head = router.reads_prefix and model.mixes_fallback
    if solo_head:
        head_alpha = _route_texts(model, [ids[1:] for ids, _ in heads], [None] * len(heads))
        abstained = {i: heads[i] for i, a in enumerate(head_alpha) if a is None}
        _posterior_into(head_alpha, abstained, model, tokenizer, batch_size, context, device)
    else:
        nll, head_alpha = _posterior_scores(model, tokenizer, heads, batch_size, context, device)
        score.nll += nll
        if on_batch is not None:
            on_batch(sum(n for _, n in heads))
        if router.reads_prefix:  # the router reads the head; where it abstains, the posterior
            head_alpha = _route_texts(model, [ids[1:] for ids, _ in heads], head_alpha)
    pieces, before = [], []
    skip = 0 if solo_head else route_tokens
    for ids, a in zip(docs, head_alpha, strict=True):
        first = skip + 1  # the first token the window scores
        for w, n in windows(ids, context, stride, skip=skip):
            head = max(0, min(route_tokens + 1 - first, n)) if solo_head else 0
            pieces.append((w, n, a, head))
            before.append(w[1 : len(w) - n] if route_on == "recent" else ids[1:first])
            first += n
    if route_on != "head" and pieces:
        kept = [p[2] for p in pieces]  # where nothing reroutes a window: the document's α
        if router.reads_prefix:
            alphas = _route_texts(model, before, kept)
        else:  # the posterior over the last route_tokens tokens before the window
            alphas = list(kept)
            tails = {i: b[-route_tokens:] for i, b in enumerate(before) if len(b) > 1}
            probes = {i: (t, len(t) - 1) for i, t in tails.items()}
            _posterior_into(alphas, probes, model, tokenizer, batch_size, context, device)
        pieces = [(w, n, a, h) for (w, n, _, h), a in zip(pieces, alphas, strict=True)]
    score.nll += _score_pieces(model, tokenizer, pieces, batch_size, device, on_batch)
    top = torch.stack(head_alpha).argmax(-1)  # where each document's head sent it
    score.routed = torch.bincount(top, minlength=len(model.experts)).tolist()
    score.window_tokens = _window_tokens(docs, context, stride)
    score.model_tokens = model.tokens_run - ran
    return score


def _posterior_scores(model, tokenizer, heads, batch_size: int, context: int, device):
    """Summed NLL of (tokens, tokens to score) pieces under the posterior over all experts
    (and the fallback, if mixed in), token by token, and the experts' posterior after each."""
    nll, posterior = 0.0, []
    # heads are short: batch as many tokens as a batch of windows holds (small matmuls are
    # slow, and every expert runs on every head)
    per_batch = max(batch_size, batch_size * context // (max(len(h) for h, _ in heads) + 1))
    with model.routing(model.posterior_router(), None):
        for i in range(0, len(heads), per_batch):
            ids, mask, target_mask = _pad(heads[i : i + per_batch], _separator(tokenizer), device)
            logp, post = model.score(ids, mask, F.pad(target_mask, (0, 1)), return_posterior=True)
            nll -= logp.sum().item()
            posterior += list(post.cpu())  # α on the host, beside the routers' α
    return nll, posterior


def _posterior_into(alphas: list, pieces: dict, model, tokenizer, batch_size, context, device):
    """alphas[i] = the experts' posterior after pieces[i] (tokens, tokens to score), for the
    rows a router could not route or that are routed by the posterior."""
    if pieces:
        some = list(pieces.values())
        _, post = _posterior_scores(model, tokenizer, some, batch_size, context, device)
        for i, a in zip(pieces, post, strict=True):
            alphas[i] = a


def _route_texts(model, token_rows: list[np.ndarray], default: list) -> list:
    """The prefix router's α for the text of each row of tokens (`default` where it has no
    text or abstains), all rows in one call."""
    texts = model.tokenizer.batch_decode(token_rows, skip_special_tokens=True)
    some = [i for i, text in enumerate(texts) if text.strip()]
    out = list(default)
    for i, routed in zip(some, model.router.route_each([texts[i] for i in some]), strict=True):
        if routed is not None:
            out[i] = routed
    return out


def _texts(corpus: Corpus, split: str, lang: str, max_docs: int | None) -> list[str]:
    texts = [d.text for d in itertools.islice(corpus.documents(split, [lang]), max_docs)]
    if not texts:
        raise XelmError(f"{corpus.path}: language {lang!r} has no documents in split {split!r}")
    return texts


def is_ensemble(path: str | Path) -> bool:
    import json

    config = Path(path) / "config.json"
    return config.exists() and json.loads(config.read_text()).get("model_type") == "xelm"


class Evaluator:
    """One model loaded once, on its device, to score any number of test sets: an HF causal LM,
    or an X-ELM ensemble folder with its router (or `router`/`top_experts`, `route_on`,
    `window` and `fallback`: see `RouterChoice`).

    `device` auto: the GPU when there is one. `batch_size` (windows per batch; default 8 on a
    CPU, 64k tokens' worth on a GPU, where small batches leave it idle). `precision` auto runs
    the models in bf16 autocast where the hardware makes that fast (the log-softmax and the
    sums stay fp32); measured on the demo seed with a 2-core AVX-512-BF16 CPU: 1.5× faster,
    bits/byte equal to 3 decimals on every language."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        context: int | None = None,
        batch_size: int | None = None,
        router: str | None = None,
        top_experts: int | None = None,
        temperature: float | None = None,
        route_tokens: int = 32,
        trust_external_experts: bool = False,
        precision: str = "auto",
        route_on: str = "head",
        window: int | None = None,
        fallback: bool | None = None,
        device: str | torch.device = "auto",
    ):
        from xelm.paths import hf_ref
        from xelm.tokenizer import load_tokenizer

        hf_ref(model_path)  # a missing folder is an error, not a hub look-up
        self.device = resolve_device(device)
        if is_ensemble(model_path):
            from xelm.ensemble import XELMForCausalLM

            model = XELMForCausalLM.from_pretrained(
                model_path,
                router=router,
                top_experts=top_experts,
                temperature=temperature,
                trust_external_experts=trust_external_experts,
                use_fallback=fallback,
                window=window,
            )
            tokenizer, inner = model.tokenizer, model.experts[0].config
            self._score = functools.partial(
                score_documents_routed, route_tokens=route_tokens, route_on=route_on
            )
        else:
            tokenizer = load_tokenizer(model_path)
            model = load_model(model_path).eval()
            check_vocab(model, tokenizer, where=str(model_path))
            inner, self._score = model.config, score_documents
        self.model, self.tokenizer, self.precision = model.to(self.device), tokenizer, precision
        self.context = context or getattr(inner, "max_position_embeddings", None) or 1024
        self.batch_size = batch_size or default_batch_size(self.device, self.context)

    def evaluate(
        self,
        corpus_dir: str | Path,
        split: str = "test",
        langs: list[str] | None = None,
        max_docs: int | None = None,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> dict[str, dict[str, float]]:
        """{lang: {documents, tokens, bytes, nll, perplexity, bits_per_byte, cost}} on the
        first `max_docs` documents of each language's split; `on_batch(lang, n)` after every
        batch, with the tokens it scored (a progress bar)."""
        corpus = Corpus(corpus_dir)
        results = {}
        for lang in langs or corpus.langs:
            docs = held_out_documents(corpus, self.tokenizer, split, lang, max_docs)
            tick = functools.partial(on_batch, lang) if on_batch is not None else None
            with autocast(self.precision, self.device):
                scored = self._score(
                    self.model,
                    self.tokenizer,
                    docs,
                    self.context - 1,
                    batch_size=self.batch_size,
                    device=self.device,
                    on_batch=tick,
                )
            results[lang] = scored.to_dict()
        return results


def default_batch_size(device: torch.device, context: int) -> int:
    """Windows per batch: 8 on a CPU (32 and 128 measured 10-30 % slower there, on the demo
    seed), about 64k tokens on a GPU (small batches leave it idle)."""
    return 8 if device.type == "cpu" else max(8, 2**16 // context)


def evaluate_model(
    model_path: str | Path,
    corpus_dir: str | Path,
    split: str = "test",
    langs: list[str] | None = None,
    max_docs: int | None = None,
    on_batch: Callable[[str, int], None] | None = None,
    **how,
) -> dict[str, dict[str, float]]:
    """One model's scores on one corpus: `Evaluator(model_path, **how).evaluate(...)`."""
    return Evaluator(model_path, **how).evaluate(corpus_dir, split, langs, max_docs, on_batch)


def unigram_baseline(
    tokenizer_path: str | Path,
    corpus_dir: str | Path,
    split: str = "test",
    langs: list[str] | None = None,
    max_docs: int | None = None,
    train_corpus_dir: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """A per-language unigram LM (add-one smoothed token frequencies of the train split of
    `train_corpus_dir`, default `corpus_dir`): the bar a trained model must clear clearly."""
    from xelm.tokenizer import load_tokenizer
    from xelm.tokens import token_streams

    tokenizer = load_tokenizer(tokenizer_path)
    corpus = Corpus(corpus_dir)
    langs = langs or corpus.langs
    vocab = len(tokenizer)
    # counts from the cached training token streams (already tokenised for training)
    streams = token_streams(Corpus(train_corpus_dir or corpus_dir), tokenizer, "train", langs)
    results = {}
    for lang in langs:
        counts = np.bincount(streams[lang].array(), minlength=vocab).astype(np.float64)
        counts[tokenizer.eos_token_id] -= streams[lang].documents  # the separators
        log_p = np.log((counts + 1) / (counts.sum() + vocab))
        docs = held_out_documents(corpus, tokenizer, split, lang, max_docs)
        score = docs.score()
        score.nll = -float(sum(log_p[ids[1:]].sum() for ids in docs.ids))
        results[lang] = score.to_dict()
    return results
