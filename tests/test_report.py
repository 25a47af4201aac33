"""The report on results where a test set lacks some training languages (the installation guide
has 13 of the demo's 16): tables and plots cover what each set has."""

from xelm.report import plot_bits_per_byte, plot_bits_vs_cost, plot_improvement, sets_table
from xelm.results import Cost, LangScores, ModelResults, Results


def scores(langs, bits, cost=1.0):
    return {
        lang: LangScores(
            documents=1,
            tokens=100,
            bytes=300,
            nll=1.0,
            perplexity=2.0,
            bits_per_byte=bits + i / 100,
            model_tokens=int(200 * cost),
            window_tokens=200,
        )
        for i, lang in enumerate(langs)
    }


def test_a_set_without_some_languages_is_tabled_and_plotted(tmp_path):
    every, some = ["en", "fi", "ja"], ["en", "ja"]
    models = {
        name: ModelResults(
            kind=kind,
            cost=Cost(tokens=1, seconds=1.0),
            scores={"in_domain": scores(every, bits, cost), "guide": scores(some, bits, cost)},
        )
        for name, kind, bits, cost in [
            ("seed", "seed", 3.0, 1.0),
            ("dense", "dense", 2.9, 1.0),
            ("typology/lid", "x-elm", 2.8, 2.0),
        ]
    }
    results = Results(
        train_langs=every,
        sets=["in_domain", "guide"],
        plotted=list(models),
        models=models,
    )
    assert results.passes("typology/lid", "guide") == 2.0
    table = sets_table(results)
    assert "| typology/lid | 2.810 | 3/3 | 2.00 | 2.805 | 2/2 | 2.00 |" in table
    for plot in (plot_improvement, plot_bits_vs_cost):
        plot(results, tmp_path / f"{plot.__name__}.png")
    plot_bits_per_byte(results, "guide", tmp_path / "guide.png")
    assert all(p.stat().st_size > 10_000 for p in tmp_path.glob("*.png"))
