"""A byte-level BPE tokenizer for all training languages, saved as a Hugging Face folder.

Trained on a language-balanced sample: language l gets a share p_l ∝ n_l^α of the sample (n_l its
characters; α = 0.3 as in mC4/XGLM), so small languages get more merges than their raw size would
give them and are not split into bytes. Byte-level, so no text is ever out of vocabulary.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from xelm.corpus import Corpus, sampling_shares
from xelm.errors import XelmError
from xelm.paths import atomic_dir, hf_ref
from xelm.spec import Spec

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
INFO = "xelm_tokenizer.json"


class TokenizerSpec(Spec):
    """The shared tokenizer of the seed and every expert."""

    vocab_size: int = Field(4096, ge=300)
    """byte-level BPE vocabulary size, special tokens included (bytes alone take 259)"""
    sample_chars: int = Field(20_000_000, ge=1)
    """characters of the language-balanced sample the BPE is trained on"""
    alpha: float = Field(0.3, ge=0)
    """language sampling exponent, p_l ∝ n_l^alpha (mC4/XGLM: 0.3)"""
    min_frequency: int = Field(2, ge=1)
    """a merge must occur at least this often"""
    split: Literal["train", "validation", "test"] = "train"
    """the corpus split sampled"""
    include_heldout: bool = False
    """also sample the corpus's held-out (new) languages"""
    pretrained: str | None = None
    """in a run: use this HF tokenizer (folder or hub name) instead of training one"""


def balanced_sample(corpus: Corpus, spec: TokenizerSpec) -> Iterator[str]:
    """Texts of each language up to its share of `sample_chars`; a language smaller than its
    share is repeated (which up-weights its pair counts, the point of the balancing)."""
    langs = corpus.langs if spec.include_heldout else corpus.train_langs
    sizes = {lang: corpus.stats(lang, spec.split)["characters"] for lang in langs}
    for lang, share in sampling_shares(sizes, spec.alpha).items():
        budget = int(share * spec.sample_chars)
        read: list[str] = []
        for doc in corpus.documents(spec.split, [lang]):
            if budget <= 0:
                break
            read.append(doc.text)
            yield doc.text
            budget -= len(doc.text)
        while budget > 0 and read:  # the language ran out: repeat it
            for text in read:
                if budget <= 0:
                    break
                yield text
                budget -= len(text)


def train_tokenizer(corpus_dir: str | Path, out: str | Path, spec: TokenizerSpec) -> Path:
    """Train the BPE on a balanced sample of `corpus_dir` and save an HF tokenizer folder."""
    from transformers import PreTrainedTokenizerFast

    corpus = Corpus(corpus_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(balanced_sample(corpus, spec), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=None
    )
    out = Path(out)
    with atomic_dir(out) as tmp:
        fast.save_pretrained(tmp)
        langs = corpus.langs if spec.include_heldout else corpus.train_langs
        info = {"spec": spec.to_dict(), "corpus": str(corpus.path), "languages": langs}
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def load_tokenizer(path: str | Path):
    """Any HF tokenizer (folder or hub name); ours or anyone's."""
    from transformers import AutoTokenizer

    ref, _ = hf_ref(path, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise XelmError(f"{path}: cannot load a tokenizer ({first})") from None


@dataclass
class Fertility:
    lang: str
    documents: int
    characters: int
    bytes: int
    tokens: int

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / max(self.characters, 1)

    @property
    def tokens_per_byte(self) -> float:
        return self.tokens / max(self.bytes, 1)


def fertility(
    tokenizer, corpus_dir: str | Path, split: str = "validation", max_docs: int = 200
) -> list[Fertility]:
    """Tokens per character and per byte, per language, on held-out documents."""
    corpus = Corpus(corpus_dir)
    rows = []
    for lang in corpus.langs:
        texts = [d.text for d in itertools.islice(corpus.documents(split, [lang]), max_docs)]
        if not texts:
            continue
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows.append(
            Fertility(
                lang,
                len(texts),
                sum(map(len, texts)),
                sum(len(t.encode("utf-8")) for t in texts),
                sum(map(len, ids)),
            )
        )
    return rows
