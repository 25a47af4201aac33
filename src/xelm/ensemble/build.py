"""Build an ensemble folder from trained experts, and BTM's parameter-average merge.

The ensemble folder references the experts (relative paths) instead of copying them, and holds
what the routers need: the allocation's TF-IDF state, the language → expert map, the prior.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from xelm.ensemble.modeling import ROUTER_DIR, XELMConfig
from xelm.ensemble.routers import ROUTERS
from xelm.errors import XelmError
from xelm.paths import atomic_dir


def _expert_info(folder: Path) -> dict:
    from xelm.experts import EXPERT_INFO

    path = folder / EXPERT_INFO
    return json.loads(path.read_text()) if path.exists() else {}


def check_same_tokenizer(folders: list[Path]):
    """Every expert folder must carry the same vocabulary (token → id); returns the first's."""
    from xelm.tokenizer import load_tokenizer

    first = load_tokenizer(folders[0])
    vocab = first.get_vocab()
    for folder in folders[1:]:
        other = load_tokenizer(folder).get_vocab()
        if other != vocab:
            diff = len(set(other.items()) ^ set(vocab.items()))
            raise XelmError(f"{folder}: its tokenizer differs from {folders[0]}'s ({diff} "
                            "vocabulary entries): experts must share one tokenizer")  # fmt: skip
    return first


def language_to_cluster(allocation) -> dict[str, int]:
    """Each language → the cluster holding most of its training documents."""
    best: dict[str, tuple[int, int]] = {}
    for c in allocation.clusters:
        for lang, stats in c["languages"].items():
            if stats["documents"] > best.get(lang, (-1, -1))[1]:
                best[lang] = (c["id"], stats["documents"])
    return {lang: cluster for lang, (cluster, _) in best.items()}


@dataclass(frozen=True)
class PriorSpec:
    """BTM's cached prior: estimated once from held-out documents, stored in the folder."""

    corpus: str | Path
    split: str = "validation"
    docs_per_language: int = 20
    max_tokens: int = 256  # of each document


def estimate_prior(model, texts: list[str], max_tokens: int = 256,
                   batch_size: int = 8) -> list[float]:  # fmt: skip
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
            batch = tok(texts[i : i + batch_size], truncation=True, max_length=max_tokens,
                        padding=True, return_tensors="pt")  # fmt: skip
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        use_cache=True)  # fmt: skip
            total += model.router.posterior(out.cache.loglik).exp().sum(0).double()
    prior = total / total.sum()
    return [round(float(x), 6) for x in prior / prior.sum()]


def build_ensemble(
    experts: list[str | Path],
    out: str | Path,
    router: str = "posterior",
    top_experts: int | None = None,
    allocation: str | Path | None = None,
    prior: list[float] | None = None,
    temperature: float | None = None,
    prior_from: PriorSpec | None = None,
) -> Path:
    """Write an ensemble folder for `experts` (HF folders; xelm experts know their cluster and
    allocation, any other model is cluster = its position). `prior_from`: estimate the prior
    (used by the prior and posterior routers) from held-out documents."""
    from transformers import AutoConfig

    from xelm.allocate.allocation import Allocation
    from xelm.langs import normalize_lang

    if router not in ROUTERS:
        raise XelmError(f"--router {router!r}: use one of {', '.join(ROUTERS)}")
    folders = [Path(e) for e in experts]
    for f in folders:
        if not (f / "config.json").exists():
            raise XelmError(f"{f}: not a model folder (no config.json)")
    configs = [AutoConfig.from_pretrained(f) for f in folders]
    for f, c in zip(folders[1:], configs[1:], strict=True):
        if c.model_type != configs[0].model_type:
            first = configs[0].model_type
            raise XelmError(f"{f}: a {c.model_type} model, but {folders[0]} is a {first}: "
                            "experts must share one architecture")  # fmt: skip
    tokenizer = check_same_tokenizer(folders)
    infos = [_expert_info(f) for f in folders]
    clusters = [i.get("cluster", n) for n, i in enumerate(infos)]
    allocation = allocation or infos[0].get("allocation")
    alloc = Allocation(allocation) if allocation else None
    lang_map: dict[str, int] = {}
    if alloc is not None:
        expert_of = {c: n for n, c in enumerate(clusters)}
        by_lang = language_to_cluster(alloc)
        lang_map = {normalize_lang(lang).split("-")[0]: expert_of[c]
                    for lang, c in by_lang.items() if c in expert_of}  # fmt: skip
    if router == "tfidf" and (alloc is None or alloc.method != "tfidf"):
        raise XelmError("--router tfidf needs the experts' TF-IDF allocation (--allocation)")
    if router == "lid" and not lang_map:
        raise XelmError("--router lid needs the experts' allocation (--allocation) to know "
                        "which expert holds which language")  # fmt: skip
    if top_experts is not None and not 1 <= top_experts <= len(folders):
        raise XelmError(f"--top-k {top_experts}: must be between 1 and {len(folders)}")

    out = Path(out)
    with atomic_dir(out) as tmp:
        config = XELMConfig(
            experts=[os.path.relpath(f.resolve(), out.resolve()) for f in folders],
            expert_clusters=clusters, router=router, top_experts=top_experts, prior=prior,
            temperature=temperature, language_to_expert=lang_map,
            vocab_size=configs[0].vocab_size, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if alloc is not None and alloc.method == "tfidf":
            shutil.copytree(alloc.router_dir, tmp / ROUTER_DIR / "tfidf")
        if prior_from is not None:  # tmp is a sibling of out: the relative paths hold
            import itertools

            from xelm.corpus import Corpus
            from xelm.ensemble.modeling import XELMForCausalLM

            corpus, n = Corpus(prior_from.corpus), prior_from.docs_per_language
            texts = [
                d.text
                for lang in corpus.train_langs
                for d in itertools.islice(corpus.documents(prior_from.split, [lang]), n)
            ]
            model = XELMForCausalLM.from_pretrained(tmp, router="uniform")
            config.prior = estimate_prior(model, texts, prior_from.max_tokens)
            config.save_pretrained(tmp)
    return out


def merge_average(experts: list[str | Path], out: str | Path,
                  weights: list[float] | None = None) -> Path:  # fmt: skip
    """BTM's merge: one dense model whose parameters are the (weighted) mean of the experts'."""
    import torch

    from xelm.models import load_model, save_model

    folders = [Path(e) for e in experts]
    tokenizer = check_same_tokenizer(folders)
    w = weights or [1 / len(folders)] * len(folders)
    if len(w) != len(folders) or any(x < 0 for x in w) or abs(sum(w) - 1) > 1e-6:
        raise XelmError(f"--weights {weights}: need {len(folders)} non-negative numbers "
                        "summing to one")  # fmt: skip
    merged = load_model(folders[0])
    state = {k: v.clone().mul_(w[0]) for k, v in merged.state_dict().items()}
    for f, wi in zip(folders[1:], w[1:], strict=True):
        other = load_model(f).state_dict()
        if other.keys() != state.keys() or any(other[k].shape != v.shape for k, v in state.items()):
            raise XelmError(f"{f}: parameters differ in names or shapes from {folders[0]}'s; "
                            "only experts of one seed can be averaged")  # fmt: skip
        for k, v in state.items():
            v.add_(other[k].to(v.dtype), alpha=wi)
    with torch.no_grad():
        merged.load_state_dict(state)
    return save_model(merged, tokenizer, out)
