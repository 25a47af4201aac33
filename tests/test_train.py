"""The training loop: exact resume after a real SIGKILL, schedules, sampling, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from xelm.config import TrainConfig
from xelm.errors import XelmError
from xelm.tokens import BlockSampler
from xelm.train.loop import lr_lambda, train


def tiny_cfg(root, out, **kw):
    base = dict(
        corpus=str(root / "corpus"),
        tokenizer=str(root / "tok"),
        out=str(out),
        preset="tiny",
        max_tokens=60 * 4 * 32,
        seq_len=32,
        micro_batch_size=4,
        log_every=1,
        threads=1,
    )
    return TrainConfig(**{**base, **kw})


def step_losses(model_dir):
    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def xelm_train(root, out, *extra, tokens=400 * 4 * 32, runner=(sys.executable, "-m")):
    """`xelm train seed` of a tiny model on the synthetic corpus, as a user runs it."""
    settings = "seq_len=32 micro_batch_size=4 log_every=1 threads=1 checkpoint_every=10"
    return [
        *runner,
        "xelm",
        "train",
        "seed",
        "--corpus",
        str(root / "corpus"),
        "--tokenizer",
        str(root / "tok"),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--tokens",
        str(tokens),
        "--quiet",
        *[arg for s in settings.split() for arg in ("--set", s)],
        *extra,
    ]


def test_resume_after_sigkill_gives_the_same_losses_and_weights(lm_setup, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(xelm_train(lm_setup, tmp_path / "a"), check=True, env=env, timeout=600)

    proc = subprocess.Popen(xelm_train(lm_setup, tmp_path / "b"), env=env)
    checkpoints = tmp_path / "b.work" / "checkpoints"
    deadline = time.time() + 300
    while not list(checkpoints.glob("step_*/COMPLETE")) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert not (tmp_path / "b").exists(), "the run finished before it could be killed"
    subprocess.run(
        xelm_train(lm_setup, tmp_path / "b", "--resume"), check=True, env=env, timeout=600
    )

    a, b = step_losses(tmp_path / "a"), step_losses(tmp_path / "b")
    assert len(a) == 400 and a == b  # bit-identical, step by step
    wa, wb = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (tmp_path / "b.work").exists()  # work folder removed once the model is saved


def test_trained_model_is_a_plain_hf_folder_that_learned(lm_setup, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = train(tiny_cfg(lm_setup, tmp_path / "m", eval_every=20), progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).eos_token == "</s>"
    info = json.loads((out / "xelm_train.json").read_text())
    assert info["tokens"] == 60 * 4 * 32 and info["steps"] == 60
    losses = step_losses(out)
    assert sum(list(losses.values())[-10:]) < sum(list(losses.values())[:10])
    assert model.config.vocab_size == 400


def test_unfinished_run_needs_resume_and_same_config(lm_setup, tmp_path):
    cfg = tiny_cfg(lm_setup, tmp_path / "m", checkpoint_every=5)
    work = tmp_path / "m.work" / "checkpoints" / "step_00000005"
    work.mkdir(parents=True)
    (work / "COMPLETE").write_text("")
    (work / "train_config.json").write_text(json.dumps({**cfg.to_dict(), "lr": 1.0}))
    with pytest.raises(XelmError, match="pass --resume"):
        train(cfg, progress=False)
    with pytest.raises(XelmError, match=r"different config \(lr: 1.0 -> 0.003\)"):
        train(cfg, resume=True, progress=False)


def test_bad_input_errors(lm_setup, tmp_path):
    with pytest.raises(XelmError, match="less than one optimizer step"):
        train(tiny_cfg(lm_setup, tmp_path / "m", max_tokens=10), progress=False)
    with pytest.raises(XelmError, match="give exactly one of preset"):
        train(tiny_cfg(lm_setup, tmp_path / "m", init=str(tmp_path)), progress=False)
    # a model whose embedding is smaller than the tokenizer's vocabulary
    small = train(tiny_cfg(lm_setup, tmp_path / "small", max_tokens=4 * 32), progress=False)
    from transformers import AutoTokenizer

    big = AutoTokenizer.from_pretrained(small)
    big.add_tokens([f"extra{i}" for i in range(50)])
    big.save_pretrained(tmp_path / "bigtok")
    with pytest.raises(XelmError, match="tokenizer has 450 tokens but the model only 400"):
        train(
            tiny_cfg(
                lm_setup,
                tmp_path / "m2",
                preset=None,
                init=str(small),
                tokenizer=str(tmp_path / "bigtok"),
            ),
            progress=False,
        )


def test_language_without_data_in_a_split(lm_setup, tmp_path):
    from xelm.corpus import Corpus, CorpusWriter, Document
    from xelm.tokenizer import load_tokenizer
    from xelm.tokens import token_streams

    with CorpusWriter(tmp_path / "c") as w:
        w.write(Document("only-one", "fr", "un seul document"))
    corpus = Corpus(tmp_path / "c")
    empty = next(s for s in ("train", "validation", "test") if s != corpus.splits.of("only-one"))
    with pytest.raises(XelmError, match=f"'fr' has no documents in the '{empty}' split"):
        token_streams(corpus, load_tokenizer(lm_setup / "tok"), empty, ["fr"], tmp_path / "cache")


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    f = lr_lambda(TrainConfig(warmup_fraction=0.1, min_lr_ratio=0.1), total_steps=100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(50) < f(20) < 1.0
    assert f(99) == pytest.approx(0.1, abs=1e-3)


def test_sampler_resumes_exactly_and_respects_weights():
    import numpy as np

    streams = {"en": np.arange(10_000) % 97, "fr": np.arange(3_000) % 89}
    a = BlockSampler(streams, seq_len=16, weights={"en": 0.8, "fr": 0.2}, seed=1)
    for _ in range(50):
        a.next_batch(8)
    state = json.loads(json.dumps(a.state_dict()))  # JSON-serialisable
    b = BlockSampler(streams, seq_len=16, weights={"en": 0.8, "fr": 0.2}, seed=1)
    b.load_state_dict(state)
    for _ in range(200):  # crosses epoch boundaries of the small language
        assert torch.equal(a.next_batch(8), b.next_batch(8))
    assert b.epoch["fr"] >= 1
    big = BlockSampler(streams, 16, {"en": 0.8, "fr": 0.2}, seed=2).next_batch(4000)
    share_en = (big[:, 0] == big[:, 1] - 1).float().mean().item()  # both streams count up
    assert share_en > 0.9
    with pytest.raises(XelmError, match="fewer than one block"):
        BlockSampler({"xx": np.arange(5)}, 16, {"xx": 1.0})


def test_two_processes_data_parallel(lm_setup, tmp_path):
    """The multi-GPU path (data sliced by rank, one writer, DDP), run as 2 CPU processes with
    gloo: torchrun sets the env that accelerate reads (`accelerate launch --cpu` would start
    a single process without MPI)."""
    ddp = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
    )
    cmd = xelm_train(lm_setup, tmp_path / "ddp", tokens=10 * 2 * 4 * 32, runner=ddp)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((tmp_path / "ddp" / "xelm_train.json").read_text())
    assert info["steps"] == 10 and info["tokens"] == 10 * 2 * 4 * 32  # 2 processes per step
    assert res.stdout.count("validation loss") == 1  # one summary, from rank 0


def test_continue_training_any_model_on_some_languages(lm_setup, tmp_path):
    """`xelm train continue`: start from an existing HF folder (here a tiny seed), train on
    one language only: the engine the experts and new-language runs will use."""
    seed = train(tiny_cfg(lm_setup, tmp_path / "seed", max_tokens=5 * 4 * 32), progress=False)
    cmd = [
        sys.executable,
        "-m",
        "xelm",
        "train",
        "continue",
        "--init",
        str(seed),
        "--corpus",
        str(lm_setup / "corpus"),
        "--out",
        str(tmp_path / "ru"),
        "--langs",
        "ru",
        "--tokens",
        str(5 * 4 * 32),
        "--quiet",
        "--set",
        "seq_len=32",
        "--set",
        "micro_batch_size=4",
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((tmp_path / "ru" / "xelm_train.json").read_text())
    assert info["languages"] == ["ru"] and info["config"]["init"] == str(seed)
    assert set(info["validation"]) == {"ru"}


def test_training_on_one_cluster_of_an_allocation_sees_only_its_languages(lm_setup, tmp_path):
    from xelm.allocate.typology import TypologySpec, allocate_typology

    info = allocate_typology(lm_setup / "corpus", tmp_path / "alloc", TypologySpec(k=2))
    for cluster in info.clusters:
        cfg = tiny_cfg(
            lm_setup,
            tmp_path / f"expert{cluster.id}",
            max_tokens=4 * 4 * 32,
            allocation=str(tmp_path / "alloc"),
            cluster=cluster.id,
        )
        out = train(cfg, progress=False)
        meta = json.loads((out / "xelm_train.json").read_text())
        assert sorted(meta["languages"]) == sorted(cluster.languages)
        assert set(meta["validation"]) <= set(cluster.languages)
    with pytest.raises(XelmError, match="allocation and cluster go together"):
        train(tiny_cfg(lm_setup, tmp_path / "x", allocation=str(tmp_path / "alloc")))


def _grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["llama", "xglm"])
def test_fused_loss_is_the_plain_loss_with_its_gradients(kind, monkeypatch):
    """The output layer and the cross-entropy in chunks of rows: same loss and gradients."""
    from transformers import XGLMConfig, XGLMForCausalLM

    from xelm.models import PRESETS
    from xelm.train.metrics import lm_loss

    torch.manual_seed(0)
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(vocab_size=97, **PRESETS["tiny"]))
    else:
        config = XGLMConfig(vocab_size=97, d_model=32, ffn_dim=64, num_layers=2, attention_heads=2)
        config.dropout = config.attention_dropout = config.activation_dropout = 0.0
        model = XGLMForCausalLM(config)
    block = torch.randint(0, 97, (3, 41))
    plain = _grads(model, lambda m: lm_loss(m, block))
    for chunk in (7, 64, 1000):  # rows per chunk: ragged, several, all at once
        monkeypatch.setattr("xelm.train.fused_loss.CHUNK_ROWS", chunk)
        fused = _grads(model, lambda m: lm_loss(m, block, fused=True))
        assert fused[0] == pytest.approx(plain[0], rel=1e-6)
        for name, grad in plain[1].items():
            torch.testing.assert_close(fused[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # validation: no gradients made
        assert lm_loss(model, block, fused=True).item() == pytest.approx(plain[0], rel=1e-6)


def test_fused_loss_falls_back_where_the_logits_are_more_than_the_output_layer():
    from transformers import GPT2Config, GPT2LMHeadModel

    from xelm.train.metrics import fusable_head

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    assert fusable_head(gpt2) is None  # not on the list of plain output layers
    assert fusable_head(torch.nn.Linear(3, 3)) is None  # not an HF model (e.g. DDP-wrapped)


def test_compiling_keeps_the_loss_fused_by_compiling_the_decoder_in_place():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from xelm.models import PRESETS
    from xelm.train.loop import _compiled
    from xelm.train.metrics import fusable_head

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=97, **PRESETS["tiny"]))
    step_fn = _compiled(llama, fused_loss=True)  # torch.compile is lazy: nothing compiles yet
    assert step_fn is llama and fusable_head(step_fn) is llama.lm_head
    assert llama.get_decoder()._compiled_call_impl is not None
    assert list(llama.state_dict()) == list(LlamaForCausalLM(llama.config).state_dict())
    # without the fused loss, or for a model it does not apply to: the whole model compiled
    assert isinstance(_compiled(llama, fused_loss=False), torch._dynamo.eval_frame.OptimizedModule)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    assert fusable_head(_compiled(gpt2, fused_loss=True)) is None
