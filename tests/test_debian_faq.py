"""The Debian FAQ as an out-of-domain test set: the same chapters in every language, commands
and package names inside the translated text."""

import shutil

import pytest

from xelm.data.debian_faq import faq_documents
from xelm.errors import XelmError


def test_a_language_the_faq_lacks_is_a_clear_error():
    with pytest.raises(XelmError, match="has no fi, eu"):
        list(faq_documents(["de", "fi", "eu"]))


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_the_real_faq_has_the_same_chapters_in_every_language():
    docs = list(faq_documents(["en", "zh", "ru"]))
    chapters = {lang: {d.id for d in docs if d.lang == lang} for lang in ("en", "zh", "ru")}
    assert len(chapters["en"]) >= 12 and chapters["en"] == chapters["zh"] == chapters["ru"]
    assert "debian-faq/index" not in chapters["en"]  # the table of contents is left out
    zh = " ".join(d.text for d in docs if d.lang == "zh")
    assert sum(not c.isascii() for c in zh) > 0.3 * len(zh)  # translated ...
    assert "apt-get" in zh and "dpkg" in zh  # ... with the commands left as they are
