"""Branch-Train: experts branch from the seed, see only their cluster, and the dense baseline
consumes the same total tokens."""

import json

import pytest
from safetensors.torch import load_file

from xelm.allocate.allocation import Allocation
from xelm.config import TrainConfig
from xelm.errors import XelmError
from xelm.experts import BranchSpec, ExpertRecord, plan_experts, train_dense, train_experts


def branch(tokens, split="proportional", match="updates", **train):
    config = TrainConfig(seq_len=32, micro_batch_size=4, threads=1, **train)
    return BranchSpec(tokens=tokens, split=split, match=match, train=config)


def test_experts_start_as_the_seed_and_see_only_their_cluster(branch_setup):
    root, seed, alloc = branch_setup
    # lr = 0: nothing moves, so each expert must still be exactly the seed
    infos = train_experts(seed, alloc, root / "frozen", branch(16 * 4 * 32, lr=0.0), progress=False)
    weights = load_file(seed / "model.safetensors")
    clusters = json.loads((alloc / "clusters.json").read_text())["clusters"]
    for info, cluster in zip(infos, clusters, strict=True):
        expert = root / "frozen" / f"expert_{info.cluster:02d}"
        got = load_file(expert / "model.safetensors")
        assert all((got[k] == v).all() for k, v in weights.items())
        assert sorted(info.languages) == sorted(cluster["languages"])
        assert set(info.validation) <= set(cluster["languages"])  # its languages only
        assert info.seed_hash and ExpertRecord.read(expert) == info


def test_apportion_keeps_the_total():
    from xelm.experts import apportion

    assert apportion(16, [0.28, 0.178, 0.262, 0.28]) == [5, 3, 4, 4]
    assert apportion(16, [0.98, 0.01, 0.01]) == [14, 1, 1]
    assert apportion(2, [0.5, 0.3, 0.2]) == [1, 1, 1]  # more experts than sequences


def test_budget_split_and_compute_matching(branch_setup):
    root, seed, alloc = branch_setup
    T = 32 * 4 * 32
    jobs = plan_experts(seed, alloc, root / "plan", branch(T))
    dense_steps = T // (4 * 32)
    # paper: the dense run's number of updates, each expert a share of its batch
    assert all(j.config.max_tokens // (j.config.micro_batch_size * 32) == dense_steps for j in jobs)
    assert sum(j.config.max_tokens for j in jobs) == T  # the batches add up to the dense batch
    even = plan_experts(seed, alloc, root / "plan", branch(T, "even", "batch"))
    assert [j.config.max_tokens for j in even] == [T // 2, T // 2]
    assert all(j.config.micro_batch_size == 4 for j in even)
    with pytest.raises(XelmError, match="too small"):
        plan_experts(seed, alloc, root / "plan", branch(100, "even", "batch"))


def test_dense_and_experts_consume_the_same_tokens(branch_setup):
    root, seed, alloc = branch_setup
    T = 8 * 4 * 32
    experts = train_experts(seed, alloc, root / "exp", branch(T, "even", "batch"), progress=False)
    corpus = Allocation(alloc).corpus
    dense = train_dense(seed, corpus, root / "dense", branch(T), progress=False)
    assert sum(e.tokens for e in experts) == dense.tokens == T
    # a re-run trains nothing: finished experts are skipped
    again = train_experts(seed, alloc, root / "exp", branch(T, "even", "batch"), progress=False)
    assert [e.seconds for e in again] == [e.seconds for e in experts]


def test_multi_round_experts_train_down_the_typology_tree(branch_setup, lm_setup):
    """HMR's rounds: round 1 the whole tree (k=1) from the seed, round 2 the k=2 clusters from
    it; each round T/2 tokens, so together they match the dense run."""
    from xelm.allocate.tfidf import TfidfAllocationSpec, allocate_tfidf
    from xelm.experts import plan_rounds, tree_cut

    root, seed, alloc = branch_setup
    a = Allocation(alloc)
    assert tree_cut(a, 3) == [[x] for x in a.record.tree["labels"]]
    assert tree_cut(a, 1) == [a.record.tree["labels"]]
    assert sorted(map(sorted, tree_cut(a, 2))) == sorted(sorted(c.languages) for c in a.clusters)
    T = 16 * 4 * 32
    spec = branch(T).replace(rounds=2)
    first, last = plan_rounds(seed, alloc, root / "hmr", spec)
    (trunk,) = first
    assert sorted(trunk.languages) == ["en", "ja", "ru"] and trunk.seed == str(seed)
    assert trunk.config.langs == trunk.languages and trunk.config.allocation is None
    assert all(j.seed == str(trunk.out) and j.config.cluster == j.cluster for j in last)
    assert trunk.config.max_tokens == T // 2
    assert sum(j.config.max_tokens for j in last) == T // 2
    # lr = 0 through both rounds: every expert is still exactly the seed, and says where from
    infos = train_experts(
        seed, alloc, root / "hmr", branch(T, lr=0.0).replace(rounds=2), progress=False
    )
    weights = load_file(seed / "model.safetensors")
    for info in infos:
        got = load_file(root / "hmr" / f"expert_{info.cluster:02d}" / "model.safetensors")
        assert all((got[k] == v).all() for k, v in weights.items())
        assert (root / "hmr" / f"expert_{info.cluster:02d}" / info.seed).resolve() == (
            root / "hmr" / "round_1" / "node_00"
        ).resolve()
    tfidf = root / "alloc-tfidf-rounds"
    allocate_tfidf(lm_setup / "corpus", tfidf, TfidfAllocationSpec(k=2), progress=False)
    with pytest.raises(XelmError, match="a tfidf allocation has none; use rounds: 1"):
        plan_rounds(seed, tfidf, root / "nope", spec)
