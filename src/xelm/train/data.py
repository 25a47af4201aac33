"""What a run trains on: per-language token streams (all of a corpus's training languages, or
one cluster of an allocation for an expert) and the block sampler that mixes them."""

from __future__ import annotations

from dataclasses import dataclass

from xelm.corpus import Corpus, sampling_shares
from xelm.errors import XelmError
from xelm.tokens import BlockSampler, TokenStream, cluster_streams, token_streams
from xelm.train.config import TrainConfig

REPLAY_PREFIX = "replay:"  # the sampler's name for a language's stream drawn as replay


@dataclass
class TrainingData:
    langs: list[str]
    train: dict[str, TokenStream]
    validation: dict[str, TokenStream]
    weights: dict[str, float]  # the languages' sampling shares
    sampler: BlockSampler


def training_data(cfg: TrainConfig, tokenizer) -> TrainingData:
    corpus = Corpus(cfg.corpus)
    langs = cfg.langs or corpus.train_langs
    if cfg.allocation is None:
        train = token_streams(corpus, tokenizer, "train", langs)
        validation = token_streams(corpus, tokenizer, "validation", langs)
    else:  # an expert: only its cluster's documents
        from xelm.allocate.allocation import Allocation

        alloc = Allocation(cfg.allocation)
        train = cluster_streams(corpus, tokenizer, "train", langs, alloc, cfg.cluster)
        validation = cluster_streams(corpus, tokenizer, "validation", langs, alloc, cfg.cluster)
        # a TF-IDF cluster can hold a few stray documents of a language: less than one block
        # cannot be sampled, and is too little to matter, so it is left out
        train = {k: s for k, s in train.items() if s.tokens > cfg.seq_len}
        if not train:
            raise XelmError(
                f"{cfg.allocation}: cluster {cfg.cluster} has no training documents "
                f"(at least one block of {cfg.seq_len + 1} tokens)"
            )
        langs = list(train)
        validation = {k: s for k, s in validation.items() if k in train}
    weights = sampling_shares({k: s.tokens for k, s in train.items()}, cfg.sampling_alpha)
    arrays = {k: s.array() for k, s in train.items()}
    restricted = cfg.allocation is not None or set(langs) != set(corpus.train_langs)
    if cfg.replay > 0 and restricted:
        mix = token_streams(corpus, tokenizer, "train", corpus.train_langs)
        mix_weights = sampling_shares({k: s.tokens for k, s in mix.items()}, cfg.sampling_alpha)
        weights = {k: w * (1 - cfg.replay) for k, w in weights.items()}
        for lang, stream in mix.items():  # REPLAY_PREFIX + lang: its own place in the order
            arrays[REPLAY_PREFIX + lang] = stream.array()
            weights[REPLAY_PREFIX + lang] = mix_weights[lang] * cfg.replay
    sampler = BlockSampler(arrays, cfg.seq_len, weights, cfg.seed)
    return TrainingData(langs, train, validation, weights, sampler)
