"""Few-shot in-context evaluation: tasks from held-out pages, lm-eval scoring, win rates."""

import json
import random

import pytest

from xelm.corpus import CorpusWriter, Document, SplitFractions
from xelm.icl.build import build_icl
from xelm.icl.tasks import TOPICS, IclSpec, build_lang, page_part
from xelm.icl.winrate import Cell, cells, win_rate

APPS = ["swriter", "scalc", "simpress", "shared"]


def help_pages(lang: str, n: int = 80, seed: int = 0) -> list[Document]:
    """LibreOffice-like pages: `text/<app>/...` ids, several paragraphs each."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz" if lang != "ru" else "абвгдежзийклмнопрстуфхцч"

    def paragraph() -> str:
        words = rng.randint(5, 20)
        return " ".join("".join(rng.choice(letters) for _ in range(5)) for _ in range(words))

    return [
        Document(
            f"text/{APPS[i % 4]}/page{i:03d}",
            lang,
            "\n".join(paragraph() for _ in range(rng.randint(2, 5))),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def help_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("icl") / "corpus"
    half_in_test = SplitFractions(validation_fraction=0.1, test_fraction=0.5)
    with CorpusWriter(out, splits=half_in_test) as writer:
        for lang in ("en", "ru"):
            writer.write_all(help_pages(lang, n=160))
    return out


def test_questions_come_from_test_pages_and_demonstrations_from_other_pages():
    spec = IclSpec(examples=50, fewshot_examples=50, min_chars=10)
    docs = help_pages("ru")
    tasks = build_lang("ru", docs, spec)
    assert set(tasks) == {"continuation", "topic"}  # translation needs paragraph ids
    for parts in tasks.values():
        pages = {part: {e.id.split("#")[0] for e in parts[part]} for part in parts}
        assert pages["test"] and pages["fewshot"] and not pages["test"] & pages["fewshot"]
        assert all(page_part(p, spec.fewshot_fraction) == "fewshot" for p in pages["fewshot"])
    by_id = {d.id: d.text.split("\n") for d in docs}
    for e in tasks["continuation"]["test"]:
        opening = e.context.split("\n")
        true_next = by_id[e.id][len(opening)]
        assert by_id[e.id][: len(opening)] == opening and e.options[e.answer] == true_next
        assert len(e.options) == 2 and e.options[1 - e.answer] not in by_id[e.id]
    for e in tasks["topic"]["test"]:
        assert e.options == list(TOPICS.values())
        assert e.options[e.answer] == TOPICS[e.id.split("/")[1]]
        assert e.context.endswith("\nTopic:")


def test_translation_pairs_paragraphs_by_id_and_skips_untranslated_ones():
    english = {
        f"text/swriter/p{i}": [(f"par_{i}", f"english sentence number {i} here")] for i in range(30)
    }
    target = {
        page: [(pid, f"перевод предложения номер {page[-2:]}")]
        for page, [(pid, _)] in english.items()
    }
    target["text/swriter/p3"] = [("par_3", english["text/swriter/p3"][0][1])]  # untranslated

    def build():
        docs = [Document(p, "ru", "x") for p in english]
        return build_lang("ru", docs, IclSpec(min_chars=5), (english, target), "Russian")

    tasks = build()
    questions = tasks["translation"]["test"] + tasks["translation"]["fewshot"]
    assert questions and all(len(q.options) == 4 for q in questions)
    for q in questions:
        page = q.id.split("#")[0]
        assert q.context == f"English: {english[page][0][1]}\nRussian:"
        assert q.options[q.answer] == target[page][0][1]
        assert page != "text/swriter/p3"
    # the same seed gives the same questions
    again = build()
    assert again["translation"]["test"] == tasks["translation"]["test"]


def test_build_writes_jsonl_lm_eval_yaml_and_a_manifest(help_corpus, tmp_path):
    from lm_eval.tasks import TaskManager

    from xelm.corpus import Corpus

    spec = IclSpec(examples=8, min_chars=10)
    manifest = build_icl(help_corpus, tmp_path / "a", spec, log=lambda s: None)
    # a corpus without LibreOffice paragraph ids: continuation and topic only
    assert set(manifest["tasks"]) == {"continuation", "topic"}
    topic = manifest["tasks"]["topic"]["langs"]["ru"]
    assert topic["test"] == 8 and topic["chance"] == pytest.approx(1 / len(TOPICS))
    rows = [json.loads(x) for x in (tmp_path / "a/topic/ru.test.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"id", "context", "options", "answer"}
    manager = TaskManager(include_path=str(tmp_path / "a" / "lm_eval"))
    assert {"xelm_topic_ru", "xelm_continuation_en"} <= set(manager.all_tasks)
    # only test pages, and the same files every time
    test_pages = {d.id for d in Corpus(help_corpus).documents("test", ["ru"])}
    for path in (tmp_path / "a").glob("*/ru.*.jsonl"):
        assert {
            json.loads(x)["id"].split("#")[0] for x in path.read_text().splitlines()
        } <= test_pages
    build_icl(help_corpus, tmp_path / "b", spec, log=lambda s: None)
    for path in (tmp_path / "a").glob("*/*.jsonl"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


@pytest.fixture(scope="module")
def twin_ensemble(branch_setup, tmp_path_factory):
    """Two copies of the seed as an X-ELM: every router must give the seed's log-likelihoods."""
    from xelm.ensemble.build import build_ensemble

    _, seed, allocation = branch_setup
    out = tmp_path_factory.mktemp("twin") / "ens"
    return build_ensemble([seed, seed], out, router="uniform", allocation=allocation), seed


REQUESTS = [("abc def ghi", " jkl"), ("abc def ghi", " mno pqr"), ("вгд еже", " зий"), ("x", " y")]


def instances(pairs=REQUESTS):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


@pytest.mark.parametrize(("router", "top_k"), [("uniform", None), ("posterior", 1), ("lid", 1)])
def test_xelm_lm_scores_a_twin_ensemble_like_hflm_scores_the_model(twin_ensemble, router, top_k):
    from xelm.icl.harness import load_lm

    ensemble, seed = twin_ensemble
    dense = load_lm(seed, precision="fp32").loglikelihood(instances(), disable_tqdm=True)
    xelm = load_lm(ensemble, router, top_k, precision="fp32").loglikelihood(
        instances(), disable_tqdm=True
    )
    for (a, greedy_a), (b, greedy_b) in zip(dense, xelm, strict=True):
        assert b == pytest.approx(a, abs=1e-4) and greedy_a == greedy_b


def test_a_one_expert_ensemble_is_exactly_that_expert(branch_setup, tmp_path):
    from xelm.ensemble.build import build_ensemble
    from xelm.icl.harness import load_lm

    _, seed, _ = branch_setup
    ensemble = build_ensemble([seed], tmp_path / "one", router="posterior")
    dense = load_lm(seed, precision="fp32").loglikelihood(instances(), disable_tqdm=True)
    xelm = load_lm(ensemble, precision="fp32").loglikelihood(instances(), disable_tqdm=True)
    assert [round(a, 4) for a, _ in xelm] == [round(a, 4) for a, _ in dense]


@pytest.mark.parametrize("router", ["uniform", "posterior"])
def test_xelm_lm_log_likelihood_is_the_ensembles_score(branch_setup, tmp_path, router):
    """Two different experts: the class's log-likelihood of a continuation is what
    `XELMForCausalLM.score` gives the same tokens (α fixed, or the per-token posterior)."""
    import torch

    from xelm.ensemble import XELMForCausalLM
    from xelm.ensemble.build import build_ensemble
    from xelm.icl.harness import load_lm
    from xelm.models import build_model, save_model
    from xelm.tokenizer import load_tokenizer

    _, seed, _ = branch_setup
    tok = load_tokenizer(seed)
    other = save_model(build_model("tiny", tok, max_positions=32, seed=7), tok, tmp_path / "other")
    ensemble = build_ensemble([seed, other], tmp_path / "ens", router=router)
    lm = load_lm(ensemble, precision="fp32")
    got = lm.loglikelihood(instances(), disable_tqdm=True)
    model = XELMForCausalLM.from_pretrained(ensemble).eval()
    for (ctx, cont), (logp, _) in zip(REQUESTS, got, strict=True):
        c, cc = lm._encode_pair(ctx, cont)
        ids = torch.tensor([c + cc])
        mask = torch.ones_like(ids)
        where = torch.zeros_like(ids, dtype=torch.bool)
        where[0, len(c) - 1 : -1] = True  # position t scores token t+1
        with torch.no_grad():
            expected = model.score(ids, mask, where).sum().item()
        assert logp == pytest.approx(expected, abs=1e-4)


def test_a_users_jsonl_task_runs_with_shots_and_seeds(twin_ensemble, tmp_path):
    from xelm.icl.harness import evaluate_icl, load_lm

    rng = random.Random(0)
    rows = []
    for _ in range(12):
        word = "".join(rng.choice("abcdef") for _ in range(4))
        rows.append({"context": f"repeat {word}:", "options": [word, "zzzz"], "answer": 0})
    task = tmp_path / "repeat.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lm = load_lm(twin_ensemble[0], "posterior", 1, precision="fp32")
    result = evaluate_icl(lm, [task], shots=[0, 2], seeds=2)["user_repeat"]
    assert result["chance"] == 0.5 and set(result["shots"]) == {"0", "2"}
    assert len(result["shots"]["0"]["acc"]) == 1 and len(result["shots"]["2"]["acc"]) == 2
    assert result["shots"]["2"]["examples"] == 12


def test_a_moved_task_folder_is_scored_from_where_it_is_now(help_corpus, branch_setup, tmp_path):
    """A run copied to another machine: its `xelm data icl` folder's own lm-eval YAMLs name the
    files where it was built; `xelm eval icl` reads them from where the folder is now."""
    from xelm.icl.harness import evaluate_icl, load_lm

    spec = IclSpec(examples=4, min_chars=10, tasks=["topic"])
    build_icl(help_corpus, tmp_path / "built", spec, log=lambda s: None)
    moved = (tmp_path / "built").rename(tmp_path / "moved")
    assert str(tmp_path / "built") in (moved / "lm_eval/xelm_topic_ru.yaml").read_text()
    lm = load_lm(branch_setup[1], precision="fp32")
    result = evaluate_icl(lm, [moved], shots=[0], seeds=1)
    assert set(result) == {"xelm_topic_en", "xelm_topic_ru"}
    assert result["xelm_topic_ru"]["shots"]["0"]["examples"] == 4


def test_win_rate_counts_noise_and_chance():
    def result(accs: dict) -> dict:
        return {
            f"t_{lang}": {
                "task": "t",
                "lang": lang,
                "chance": 0.25,
                "shots": {"0": {"acc_norm": [a], "examples": 400}},
            }
            for lang, a in accs.items()
        }

    ours = result({"a": 0.60, "b": 0.26, "c": 0.50, "d": 0.40})
    theirs = result({"a": 0.40, "b": 0.25, "c": 0.50, "d": 0.45})
    w = win_rate(cells(ours, theirs))
    assert w["cells"] == 4 and w["wins"] == 2 and w["losses"] == 1
    assert w["rate"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    # a: +0.20 is clear; b: +0.01 is noise (and ours is at chance); d: -0.05 is within noise
    assert w["clear_wins"] == 1 and w["meaningful_wins"] == 1 and w["within_noise"] == 3
    assert w["ours_near_chance"] == 1
    lo, hi = w["ci95"]
    assert 0 <= lo <= w["rate"] <= hi <= 1
    assert Cell("t", "x", "0", 0.3, 0.2, 10, 0.25).near_chance(0.3)  # 10 questions: noise


def test_cli_scores_models_side_by_side_and_lm_eval_knows_the_xelm_model(twin_ensemble, tmp_path):
    import subprocess
    import sys

    ensemble, seed = twin_ensemble
    task = tmp_path / "pick.jsonl"
    rows = [{"context": f"pick {w}:", "options": [w, "qq"], "answer": 0} for w in "abcdef"]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "icl.json"
    cli = [sys.executable, "-m", "xelm", "eval", "icl", "--tasks", str(task), "--shots", "0,1"]
    cli += ["--seeds", "2", "--model", f"seed={seed}", "--model", f"xelm={ensemble}"]
    cli += ["--router", "lid", "--top-k", "1", "--precision", "fp32", "--out", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "win rates" in done.stdout
    models = json.loads(out.read_text())["models"]
    # two copies of the seed: the same answers as the seed itself
    assert models["xelm"]["user_pick"]["shots"] == models["seed"]["user_pick"]["shots"]

    harness = [sys.executable, "-m", "xelm.lm_eval", "run", "--model", "xelm"]
    harness += ["--model_args", f"pretrained={ensemble},router=lid,top_k=1"]
    harness += ["--include_path", str(tmp_path / "yaml"), "--tasks", "pick", "--device", "cpu"]
    (tmp_path / "yaml").mkdir()
    import yaml

    from xelm.icl.build import task_yaml

    doc = task_yaml("pick", {"test": task}, " ", ["mine"])
    (tmp_path / "yaml" / "pick.yaml").write_text(yaml.safe_dump(doc))
    done = subprocess.run(harness, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "|pick" in done.stdout and "acc_norm" in done.stdout
