"""Teach an X-ELM new languages (HMR), and the LAPT baseline it is compared with.

HMR (X-ELM's hierarchical multi-round training, its new-language half): each new language gets a
new expert, branched not from the seed but from the existing expert that is closest to the
language, and trained on that language only. The old experts are not touched, so the X-ELM cannot
forget what they knew; the ensemble gains one expert per language, and every router learns where
the language goes (language ID: the new expert; TF-IDF: a new centroid, the mean embedding of the
language's training pages, with the balancing price that best keeps it from taking the old
languages' pages; prior: BTM's cached prior re-estimated over all the ensemble's languages).

LAPT (language-adaptive pre-training): the dense model continued on the new language with the same
token budget, batch and schedule as the new expert. Its other languages can get worse.

Parent rules: `typology` (the expert holding the language at the smallest URIEL distance from the
new one: single linkage, the distance the typology allocation merges by), `posterior` (the expert
with the lowest loss on the language's validation pages), `seed` (BTM's default, no hierarchy),
or an expert's index.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from xelm.allocate.specs import TypologySpec
from xelm.ensemble.build import PriorSpec
from xelm.errors import XelmError
from xelm.experts import (
    BRANCH_TRAIN_DEFAULTS,
    AdaptedFrom,
    ExpertRecord,
    over_branch_defaults,
    seed_hash,
)
from xelm.paths import atomic_dir, link_tree, relative_to, resolve_from
from xelm.spec import Spec
from xelm.train import TrainConfig, TrainRecord

if TYPE_CHECKING:
    import numpy as np

PARENT_RULES = ("typology", "posterior", "seed")


class AdaptSpec(Spec):
    """How an X-ELM learns new languages (and how the LAPT baseline is trained)."""

    langs: list[str] = []
    """the new languages, one new expert each"""
    tokens: int = Field(100_000, ge=1)
    """per new language: the new expert's training budget, and LAPT's"""
    parent: str = "typology"
    """where a new expert branches from: typology, posterior, seed, or an expert's index"""
    posterior_docs: int = Field(20, ge=1)
    """validation pages of the new language the posterior rule scores each expert on"""
    uriel: TypologySpec = TypologySpec()
    """URIEL settings of the typology rule (features, norms, codes; k is not used)"""
    prior: PriorSpec = PriorSpec()
    """how the grown ensemble's cached prior is re-estimated (when it has one)"""
    train: TrainConfig = TrainConfig(**BRANCH_TRAIN_DEFAULTS)
    """the training loop's settings for the new experts and LAPT alike"""

    @field_validator("parent")
    @classmethod
    def _rule(cls, value: str) -> str:
        if value not in PARENT_RULES and not value.isdigit():
            raise ValueError(f"use one of {', '.join(PARENT_RULES)} or an expert's index")
        return value

    _over_branch_defaults = field_validator("train", mode="before")(over_branch_defaults)


@dataclass
class Ensemble:
    """An ensemble folder as adaptation reads it."""

    folder: Path
    config: Any  # XELMConfig
    experts: list[Path]
    languages: list[list[str]]  # per expert: the languages the ensemble sends to it

    @classmethod
    def read(cls, folder: str | Path) -> Ensemble:
        from xelm.ensemble.modeling import XELMConfig, expert_paths
        from xelm.evaluate import is_ensemble

        folder = Path(folder)
        if not is_ensemble(folder):
            raise XelmError(f"{folder}: not an X-ELM ensemble folder (build one first)")
        config = XELMConfig.from_pretrained(folder)
        experts = expert_paths(folder, config)
        languages: list[list[str]] = [[] for _ in experts]
        for lang, e in (config.language_to_expert or {}).items():
            languages[e].append(lang)
        return cls(folder, config, experts, languages)

    @property
    def all_languages(self) -> list[str]:
        return sorted(lang for langs in self.languages for lang in langs)

    def seed(self) -> Path:
        """The seed the experts were branched from (their records say)."""
        record = ExpertRecord.find(self.experts[0])
        if record is None:
            raise XelmError(
                f"{self.folder}: its experts carry no xelm record, so the seed is unknown; "
                "choose another parent rule"
            )
        return resolve_from(record.seed, self.experts[0])


@dataclass
class Parent:
    path: Path
    origin: AdaptedFrom


def choose_parent(ens: Ensemble, corpus, lang: str, spec: AdaptSpec) -> Parent:
    """The model a new expert for `lang` branches from, by `spec.parent`."""
    rule = spec.parent
    info = {"language": lang, "rule": rule, "budget": spec.tokens}
    if rule == "seed":
        return Parent(ens.seed(), AdaptedFrom(parent=None, parent_languages=[], **info))
    if rule.isdigit():
        e = int(rule)
        if e >= len(ens.experts):
            raise XelmError(f"--parent {e}: the ensemble has experts 0..{len(ens.experts) - 1}")
        extra: dict[str, float] = {}
    elif rule == "typology":
        e, distance = _closest_by_typology(ens, lang, spec.uriel)
        extra = {"distance": round(distance, 6)}
    else:
        e, loss = _closest_by_loss(ens, corpus, lang, spec.posterior_docs)
        extra = {"loss": round(loss, 6)}
    origin = AdaptedFrom(parent=e, parent_languages=ens.languages[e], **info, **extra)
    return Parent(ens.experts[e], origin)


def _closest_by_typology(ens: Ensemble, lang: str, uriel: TypologySpec) -> tuple[int, float]:
    from xelm.allocate.typology import cosine_distances, uriel_vectors

    known = ens.all_languages
    if not known:
        raise XelmError(
            f"{ens.folder}: the ensemble does not say which languages its experts hold "
            "(no language_to_expert); use --parent posterior or an expert's index"
        )
    langs = [lang, *known]
    dist = cosine_distances(uriel_vectors(langs, uriel), langs, uriel.norms)
    row = dict(zip(langs, dist[0], strict=True))
    per_expert = [min((row[x] for x in held), default=float("inf")) for held in ens.languages]
    best = min(range(len(per_expert)), key=per_expert.__getitem__)
    return best, float(per_expert[best])


def _closest_by_loss(ens: Ensemble, corpus, lang: str, documents: int) -> tuple[int, float]:
    import torch

    from xelm.evaluate import score_texts
    from xelm.models import load_model
    from xelm.tokenizer import load_tokenizer

    texts = [d.text for d in itertools.islice(corpus.documents("validation", [lang]), documents)]
    if not texts:
        raise XelmError(f"{corpus.path}: {lang} has no validation pages for --parent posterior")
    tokenizer = load_tokenizer(ens.folder)
    losses = []
    with torch.no_grad():
        for path in ens.experts:
            model = load_model(path).eval()
            context = model.config.max_position_embeddings - 1
            s = score_texts(model, tokenizer, texts, context)
            losses.append(s.nll / s.tokens)
    best = min(range(len(losses)), key=losses.__getitem__)
    return best, float(losses[best])


def _check_new_languages(ens: Ensemble | None, corpus, langs: list[str]) -> None:
    if not langs:
        raise XelmError("no new languages given (--langs)")
    if len(set(langs)) < len(langs):
        raise XelmError(f"--langs {','.join(langs)}: a language is named twice")
    for lang in langs:
        if lang not in corpus.langs or corpus.stats(lang, "train")["documents"] == 0:
            raise XelmError(
                f"{corpus.path}: no training pages in {lang!r}; add the language to the corpus"
            )
        if ens is not None and lang in ens.all_languages:
            e = ens.languages.index(next(x for x in ens.languages if lang in x))
            raise XelmError(
                f"{ens.folder}: already has {lang} (expert {e}); adaptation adds new languages"
            )


def train_new_expert(
    parent: Parent, corpus_dir: Path, out: Path, spec: AdaptSpec, cluster: int, progress: bool
) -> ExpertRecord:
    """Branch `parent` and train it on its new language only."""
    lang = parent.origin.language
    cfg = spec.train.replace(
        corpus=str(corpus_dir),
        init=str(parent.path),
        preset=None,
        langs=[lang],
        max_tokens=parent.origin.budget,
        out=str(out),
    )
    from xelm.train.loop import train

    parent_hash = seed_hash(parent.path)
    done = ExpertRecord.find(out) if out.is_dir() else None
    if (  # trained before from this very parent with these settings (an interrupted run)
        done is not None
        and done.adapted == parent.origin
        and done.seed_hash == parent_hash
        and TrainRecord.read(out).config == cfg
    ):
        return done
    train(cfg, resume=True, progress=progress)
    run = TrainRecord.read(out)
    record = ExpertRecord(
        cluster=cluster,
        languages=[lang],
        share=1.0,
        tokens=run.tokens,
        steps=run.steps,
        seconds=run.seconds,
        resumed_at=run.resumed_at,
        seed=relative_to(parent.path, out),
        seed_hash=parent_hash,
        split="adapt",
        match="adapt",
        validation_loss=run.mean_validation_loss,
        validation=run.validation,
        adapted=parent.origin,
    )
    record.write(out)
    return record


def adapt_ensemble(
    ensemble: str | Path,
    corpus_dir: str | Path,
    out: str | Path,
    spec: AdaptSpec,
    experts_dir: str | Path | None = None,
    progress: bool = True,
) -> list[ExpertRecord]:
    """Write at `out` the ensemble grown by one expert per new language (`spec.langs`); the
    new experts are trained in `experts_dir` (default `OUT.experts/`), resumably. The ensemble
    at `ensemble` is left as it was."""
    from xelm.corpus import Corpus

    ens = Ensemble.read(ensemble)
    corpus = Corpus(corpus_dir)
    _check_new_languages(ens, corpus, spec.langs)
    out = Path(out)
    work = Path(experts_dir) if experts_dir else out.with_name(out.name + ".experts")
    next_cluster = max(ens.config.expert_clusters, default=-1) + 1
    new = {}
    for i, lang in enumerate(spec.langs):
        parent = choose_parent(ens, corpus, lang, spec)
        folder = work / f"expert_{lang}"
        cluster = next_cluster + i
        new[folder] = train_new_expert(parent, corpus.path, folder, spec, cluster, progress)
    grow_ensemble(ens, new, corpus, out, spec)
    return list(new.values())


def grow_ensemble(
    ens: Ensemble, new: dict[Path, ExpertRecord], corpus, out: Path, spec: AdaptSpec
) -> None:
    """The ensemble plus the new experts, each router told about them."""
    import copy

    from xelm.ensemble.build import cached_prior, place_expert
    from xelm.ensemble.routers import ROUTER_DIR

    config = copy.deepcopy(ens.config)
    with atomic_dir(out) as tmp:
        # the old ensemble as hard links, except the files rewritten below (a write through a
        # link would change the old ensemble too)
        link_tree(ens.folder, tmp)
        (tmp / "config.json").unlink()
        if (tmp / ROUTER_DIR).exists():
            shutil.rmtree(tmp / ROUTER_DIR)
            shutil.copytree(ens.folder / ROUTER_DIR, tmp / ROUTER_DIR)
        for folder, record in new.items():
            lang = record.languages[0]
            name = f"experts/new_{lang}"
            place_expert(folder, tmp / name, record)
            config.language_to_expert = {
                **(config.language_to_expert or {}),
                lang: len(config.experts),
            }
            config.experts.append(name)
            config.expert_clusters.append(record.cluster)
        tfidf = tmp / ROUTER_DIR / "tfidf"
        if tfidf.exists():
            langs = [r.languages[0] for r in new.values()]
            old = [x for x in ens.all_languages if x in corpus.langs]
            _add_centroids(tfidf, corpus, langs, old)
        if config.prior is not None:
            config.prior = None
            config.save_pretrained(tmp)
            langs = [x for x in ens.all_languages + spec.langs if x in corpus.langs]
            config.prior = cached_prior(tmp, corpus.path, spec.prior, langs)
        config.save_pretrained(tmp)


def _add_centroids(
    state: Path, corpus, new: list[str], old: list[str], documents: int = 1000
) -> None:
    """One TF-IDF centroid per new language: the mean embedding of its training pages, with the
    balancing price that best keeps pages apart: the new language's pages should go to the new
    centroid, the other languages' held-out pages (and those of the languages added before it)
    where they went before. The share of each group routed right is summed, and the price is
    the midpoint of the best interval (a new centroid must not steal an old language)."""
    import numpy as np

    from xelm.allocate.tfidf import TfidfClusters

    def pages(lang: str, split: str, n: int) -> list[str]:
        return [d.text for d in itertools.islice(corpus.documents(split, [lang]), n)]

    clusters = TfidfClusters.load(state)
    embed = clusters.embedder.embed
    held_out = [t for lang in old for t in pages(lang, "validation", 50)]
    before = embed(held_out) if held_out else np.zeros((0, clusters.embedder.dims), np.float32)
    centroids, prices = clusters.centroids, clusters.prices
    for lang in new:
        mine = embed(pages(lang, "train", documents))
        centroid = mine.mean(0, keepdims=True)
        margins = [_margin(x, centroid, centroids, prices) for x in (mine, before)]
        price = _separating_price(-margins[0], -margins[1])
        centroids = np.concatenate([centroids, centroid])
        prices = np.concatenate([prices, np.array([price], np.float32)])
        before = np.concatenate([before, mine[:200]])
    TfidfClusters(clusters.embedder, centroids, prices).save(state)


def _margin(x: np.ndarray, new: np.ndarray, centroids: np.ndarray, prices: np.ndarray):
    """Per row of `x`: the squared distance to the `new` centroid minus its best priced
    distance to the others; the row goes to the new centroid iff margin + λ_new < 0."""
    from xelm.allocate.tfidf import squared_distances

    best = (squared_distances(x, centroids) + prices[None]).min(1)
    return squared_distances(x, new)[:, 0] - best


def _separating_price(want: np.ndarray, keep: np.ndarray) -> float:
    """λ maximising share(want > λ) + share(keep <= λ): pages in `want` go to the new centroid
    when λ is below their value, those in `keep` stay when it is not."""
    import numpy as np

    if not len(keep):
        return float(want.min()) - 1.0  # nothing to protect: every new page goes to it
    cuts = np.unique(np.concatenate([want, keep]))
    points = np.concatenate([[cuts[0] - 1.0], (cuts[1:] + cuts[:-1]) / 2, [cuts[-1] + 1.0]])
    w, k = np.sort(want), np.sort(keep)
    routed = 1 - np.searchsorted(w, points, side="right") / len(w)
    stays = np.searchsorted(k, points, side="right") / len(k)
    return float(points[np.argmax(routed + stays)])


def lapt(
    model: str | Path,
    corpus_dir: str | Path,
    lang: str,
    out: str | Path,
    spec: AdaptSpec,
    progress: bool = True,
) -> TrainRecord:
    """LAPT: `model` (the dense baseline) continued on `lang` alone, with the budget, batch and
    schedule a new expert gets."""
    from xelm.corpus import Corpus

    corpus = Corpus(corpus_dir)
    _check_new_languages(None, corpus, [lang])
    if not Path(model).is_dir():
        raise XelmError(f"{model}: no such model folder to continue")
    cfg = spec.train.replace(
        corpus=str(corpus.path),
        init=str(model),
        preset=None,
        langs=[lang],
        max_tokens=spec.tokens,
        out=str(out),
    )
    from xelm.train.loop import train

    train(cfg, resume=True, progress=progress)
    return TrainRecord.read(out)
