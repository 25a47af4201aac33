"""The preamble stress set: the same test pages, opened by text not in their language."""

from xelm.corpus import Corpus
from xelm.data.build import build_stress_corpus


def test_every_test_page_follows_an_english_or_code_preamble(lm_setup, tmp_path):
    source = Corpus(lm_setup / "corpus")
    build_stress_corpus(lm_setup / "corpus", tmp_path / "a", ["ru", "ja"])
    stress = Corpus(tmp_path / "a")
    english_lines = {x for d in source.documents("test", ["en"]) for x in d.text.split("\n")}
    kinds = set()
    for lang in ("ru", "ja"):
        pages = {d.id: d.text for d in source.documents("test", [lang])}
        docs = list(stress.documents("test", [lang]))
        assert {d.id for d in docs} == set(pages)  # every test page, nothing else
        for doc in docs:
            preamble, _, own = doc.text.rpartition("\n" + pages[doc.id])
            assert own == "" and preamble  # the page, unchanged, after a preamble
            first = preamble.split("\n")[0]
            kinds.add("english" if first in english_lines else "code")
            assert first not in pages[doc.id]
    assert kinds == {"english", "code"}
    # the same files every time
    build_stress_corpus(lm_setup / "corpus", tmp_path / "b", ["ru", "ja"])
    again = Corpus(tmp_path / "b")
    assert [d.text for d in again.documents("test", ["ja"])] == [
        d.text for d in stress.documents("test", ["ja"])
    ]
