"""Build an ensemble folder from trained experts, and BTM's parameter-average merge.

An ensemble folder is self-contained: the experts are placed inside it (`experts/NAME`, hard
links where the filesystem allows, so no disk is spent), beside what the routers need: the
allocation's TF-IDF state, the language → expert map, the prior. It can be moved, copied or
uploaded as one folder, and loading never reaches outside it (see `XELMForCausalLM`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from xelm.ensemble.routers import ROUTER_DIR, ROUTERS
from xelm.errors import XelmError
from xelm.paths import atomic_dir, link_tree, relative_to, resolve_from
from xelm.spec import Spec


def check_same_tokenizer(folders: list[Path]):
    """Every expert folder must carry the same vocabulary (token → id); returns the first's."""
    from xelm.tokenizer import load_tokenizer

    first = load_tokenizer(folders[0])
    vocab = first.get_vocab()
    for folder in folders[1:]:
        other = load_tokenizer(folder).get_vocab()
        if other != vocab:
            diff = len(set(other.items()) ^ set(vocab.items()))
            raise XelmError(
                f"{folder}: its tokenizer differs from {folders[0]}'s ({diff} "
                "vocabulary entries): experts must share one tokenizer"
            )
    return first


def language_to_cluster(allocation) -> dict[str, int]:
    """Each language → the cluster holding most of its training documents."""
    best: dict[str, tuple[int, int]] = {}
    for c in allocation.clusters:
        for lang, stats in c.languages.items():
            if stats.documents > best.get(lang, (-1, -1))[1]:
                best[lang] = (c.id, stats.documents)
    return {lang: cluster for lang, (cluster, _) in best.items()}


class PriorSpec(Spec):
    """BTM's cached prior: estimated once from held-out documents, stored in the folder."""

    documents: int = Field(20, ge=1)
    """held-out documents per language the prior is estimated from"""
    split: str = "validation"
    """the corpus split they come from"""
    max_tokens: int = Field(256, ge=1)
    """tokens of each document read"""


def estimate_prior(
    model, texts: list[str], max_tokens: int = 256, batch_size: int = 8
) -> list[float]:
    """The mean over `texts` of the posterior over experts (uniform prior) after each text:
    how often, and how strongly, the data asks for each expert."""
    import torch

    from xelm.ensemble.routers import PosteriorRouter

    if not texts:
        raise XelmError("no held-out documents to estimate the prior from")
    tok, k = model.tokenizer, len(model.experts)
    total = torch.zeros(k, dtype=torch.float64)
    with torch.no_grad(), model.routing(PosteriorRouter(k), None):
        for i in range(0, len(texts), batch_size):
            batch = tok(
                texts[i : i + batch_size],
                truncation=True,
                max_length=max_tokens,
                padding=True,
                return_tensors="pt",
            )
            # every token after the first is scored; only each expert's target log-probability
            # is formed, never the (batch, time, experts, vocabulary) mixture
            mask = batch.attention_mask.bool()
            scored = torch.zeros_like(mask)
            scored[:, :-1] = mask[:, 1:]
            _, log_alpha = model.score(
                batch.input_ids, batch.attention_mask, scored, return_posterior=True
            )
            total += log_alpha.exp().sum(0).double()
    prior = total / total.sum()
    return [round(float(x), 6) for x in prior / prior.sum()]


def cached_prior(
    folder: Path, corpus_dir: str | Path, spec: PriorSpec, langs: list[str] | None = None
) -> list[float]:
    """The prior of the ensemble in `folder` from the corpus's held-out documents of `langs`
    (default: its training languages)."""
    import itertools

    from xelm.corpus import Corpus
    from xelm.ensemble.modeling import XELMForCausalLM

    corpus = Corpus(corpus_dir)
    texts = [
        d.text
        for lang in langs or corpus.train_langs
        for d in itertools.islice(corpus.documents(spec.split, [lang]), spec.documents)
    ]
    model = XELMForCausalLM.from_pretrained(folder, router="uniform")
    return estimate_prior(model, texts, spec.max_tokens)


def _expert_configs(folders: list[Path]) -> list:
    """The experts' HF configs: model folders of one architecture (and, checked by the caller,
    one tokenizer)."""
    from transformers import AutoConfig

    from xelm.models import check_same_architecture

    for f in folders:
        if not (f / "config.json").exists():
            raise XelmError(f"{f}: not a model folder (no config.json)")
    configs = [AutoConfig.from_pretrained(f) for f in folders]
    check_same_architecture(configs, [str(f) for f in folders])
    return configs


def _language_map(alloc, clusters: list[int]) -> dict[str, int]:
    """Language (base tag, as langid names it) → the expert holding most of its documents."""
    from xelm.langs import normalize_lang

    if alloc is None:
        return {}
    expert_of = {c: n for n, c in enumerate(clusters)}
    return {
        normalize_lang(lang).split("-")[0]: expert_of[c]
        for lang, c in language_to_cluster(alloc).items()
        if c in expert_of
    }


def _check_router(router: str, alloc, lang_map: dict, top_experts: int | None, k: int) -> None:
    if router not in ROUTERS:
        raise XelmError(f"--router {router!r}: use one of {', '.join(ROUTERS)}")
    needs = ROUTERS[router].allocation_method
    if needs is not None and (alloc is None or alloc.method != needs):
        raise XelmError(f"--router {router} needs the experts' {needs} allocation (--allocation)")
    if router == "lid" and not lang_map:
        raise XelmError(
            "--router lid needs the experts' allocation (--allocation) to know "
            "which expert holds which language"
        )
    if top_experts is not None and not 1 <= top_experts <= k:
        raise XelmError(f"--top-k {top_experts}: must be between 1 and {k}")


def build_ensemble(
    experts: list[str | Path],
    out: str | Path,
    router: str = "posterior",
    top_experts: int | None = None,
    allocation: str | Path | None = None,
    prior: list[float] | None = None,
    temperature: float | None = None,
    prior_from: str | Path | None = None,
    prior_spec: PriorSpec | None = None,
    fallback: str | Path | None = None,
) -> Path:
    """Write an ensemble folder for `experts` (HF folders; xelm experts know their cluster and
    allocation, any other model is cluster = its position). `prior_from`: a corpus whose
    held-out documents the prior (of the prior and posterior routers) is estimated from.
    `fallback`: a model of the same tokenizer (the seed) placed beside the experts, which
    scoring can mix in token by token (`use_fallback`)."""
    from xelm.allocate.allocation import Allocation
    from xelm.ensemble.modeling import FALLBACK_DIR, XELMConfig
    from xelm.experts import ExpertRecord

    folders = [Path(e) for e in experts]
    every = folders + ([Path(fallback)] if fallback is not None else [])
    configs = _expert_configs(every)
    tokenizer = check_same_tokenizer(every)
    records = [ExpertRecord.find(f) for f in folders]
    clusters = [r.cluster if r else n for n, r in enumerate(records)]
    if allocation is None and records[0] and records[0].allocation:
        allocation = resolve_from(records[0].allocation, folders[0])
    alloc = Allocation(allocation) if allocation else None
    lang_map = _language_map(alloc, clusters)
    _check_router(router, alloc, lang_map, top_experts, len(folders))
    out = Path(out)
    names = inner_names(folders)
    with atomic_dir(out) as tmp:
        for folder, name, record in zip(folders, names, records, strict=True):
            place_expert(folder, tmp / name, record)
        if fallback is not None:
            link_tree(Path(fallback), tmp / FALLBACK_DIR)
        config = XELMConfig(
            experts=names,
            expert_clusters=clusters,
            router=router,
            top_experts=top_experts,
            prior=prior,
            temperature=temperature,
            language_to_expert=lang_map,
            fallback=FALLBACK_DIR if fallback is not None else None,
            vocab_size=configs[0].vocab_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if alloc is not None and alloc.method == "tfidf":
            shutil.copytree(alloc.router_dir, tmp / ROUTER_DIR / "tfidf")
        if prior_from is not None:
            config.prior = cached_prior(tmp, prior_from, prior_spec or PriorSpec())
            config.save_pretrained(tmp)
    return out


def inner_names(folders: list[Path]) -> list[str]:
    """Where each expert goes inside the ensemble folder: `experts/` + its folder's name (with
    its position in front where two names clash)."""
    names = [f.resolve().name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{n:02d}_{name}" for n, name in enumerate(names)]
    return [f"experts/{name}" for name in names]


def place_expert(folder: Path, inside: Path, record=None) -> None:
    """Put the expert `folder` at `inside` (an ensemble's own tree). Its record's paths to the
    seed and the allocation are rewritten relative to the new place, so they still resolve."""
    link_tree(folder, inside)
    if record is not None:
        rebased = {
            key: relative_to(resolve_from(value, folder), inside)
            for key in ("seed", "allocation")
            if (value := getattr(record, key))
        }
        (inside / record.FILE).unlink()  # a link to the original: replace, never write through
        record.model_copy(update=rebased).write(inside)


def merge_average(
    experts: list[str | Path], out: str | Path, weights: list[float] | None = None
) -> Path:
    """BTM's merge: one dense model whose parameters are the (weighted) mean of the experts'."""
    import torch

    from xelm.models import load_model, save_model

    folders = [Path(e) for e in experts]
    tokenizer = check_same_tokenizer(folders)
    w = weights or [1 / len(folders)] * len(folders)
    if len(w) != len(folders) or any(x < 0 for x in w) or abs(sum(w) - 1) > 1e-6:
        raise XelmError(
            f"--weights {weights}: need {len(folders)} non-negative numbers summing to one"
        )
    merged = load_model(folders[0])
    state = {k: v.clone().mul_(w[0]) for k, v in merged.state_dict().items()}
    for f, wi in zip(folders[1:], w[1:], strict=True):
        other = load_model(f).state_dict()
        if other.keys() != state.keys() or any(other[k].shape != v.shape for k, v in state.items()):
            raise XelmError(
                f"{f}: parameters differ in names or shapes from {folders[0]}'s; "
                "only experts of one seed can be averaged"
            )
        for k, v in state.items():
            v.add_(other[k].to(v.dtype), alpha=wi)
    with torch.no_grad():
        merged.load_state_dict(state)
    return save_model(merged, tokenizer, out)
