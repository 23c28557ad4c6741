"""Distillation: pruning, KD losses, resumable training, corruption, 2-process DDP, planner, CLI."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT, run_cli
from nano_runtime.config import ModelConfig
from nano_runtime.distill import checkpoints as ckpt
from nano_runtime.distill.data import PackedData, TopKCache, build_topk_cache, pack, prepare
from nano_runtime.distill.losses import LOSSES, TopK, kd_loss
from nano_runtime.distill.prune import PruneSpec, compute_importance, prune_state
from nano_runtime.distill.trainer import DistillConfig, Trainer
from nano_runtime.errors import NanoError
from nano_runtime.loader import build_model

TINY = dict(vocab_size=256, dim=48, n_layers=4, n_heads=6, n_kv_heads=2, hidden_dim=96,
            max_seq_len=64)


def tiny_teacher(seed=1, **kw):
    return build_model(ModelConfig(**dict(TINY, **kw)), seed=seed).eval()


def tokens(n, t=17, seed=0, vocab=256):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ pruning
def test_prune_identity_spec_keeps_the_function():
    t = tiny_teacher()
    imp = compute_importance(t, [tokens(4)])
    cfg, sd, kept = prune_state(t, imp, PruneSpec.parse("prune:layers=4,hidden=96,heads=6"))
    assert kept == [0, 1, 2, 3]
    s = build_model(cfg, sd).eval()
    x = tokens(2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(s(x), t(x))


@pytest.mark.parametrize("spec", ["prune:layers=2", "prune:layers=3,depth=angular",
                                  "prune:hidden=40", "prune:heads=4", "prune:kv_heads=1",
                                  "prune:dim=32", "prune:layers=3,hidden=64,heads=4,kv_heads=2,dim=40"])
def test_prune_shapes_runnable_and_savable(spec, tmp_path):
    from nano_runtime.formats.checkpoint import save_checkpoint
    from nano_runtime.loader import load_model
    t = tiny_teacher()
    imp = compute_importance(t, [tokens(4)])
    cfg, sd, kept = prune_state(t, imp, PruneSpec.parse(spec))
    assert cfg.num_params(False) < t.cfg.num_params(False)
    assert len(kept) == cfg.n_layers and kept == sorted(kept)
    s = build_model(cfg, sd).eval()              # validates every shape against the config
    x = tokens(2, seed=5)
    with torch.no_grad():
        y = s(x)
    assert y.shape == (2, 17, 256) and torch.isfinite(y).all()
    save_checkpoint(str(tmp_path / "s"), cfg, sd)
    with torch.no_grad():
        torch.testing.assert_close(load_model(str(tmp_path / "s")).model(x), y)


def test_prune_depth_drops_the_layer_that_does_nothing():
    t = tiny_teacher()
    with torch.no_grad():                        # layer 2 becomes the identity
        t.layers[2].attn.wo.weight.zero_()
        t.layers[2].mlp.w_down.weight.zero_()
    imp = compute_importance(t, [tokens(4)])
    assert int(imp.block_influence.argmin()) == 2
    _, _, kept = prune_state(t, imp, PruneSpec.parse("prune:layers=3"))
    assert kept == [0, 1, 3]


def test_prune_gemma3_width():
    cfg = ModelConfig.from_name("tiny-gemma3")
    t = build_model(cfg, seed=1).eval()
    imp = compute_importance(t, [tokens(2, 20, vocab=cfg.vocab_size)])
    c2, sd, _ = prune_state(t, imp, PruneSpec(hidden=cfg.hidden_dim // 2))
    y = build_model(c2, sd)(tokens(1, 20, vocab=cfg.vocab_size))
    assert torch.isfinite(y).all()
    with pytest.raises(NanoError, match="sliding-window"):
        prune_state(t, imp, PruneSpec(layers=cfg.n_layers - 1))


@pytest.mark.parametrize("spec,msg", [("prune:width=3", "unknown key"), ("prune:layers=x", "integer"),
                                      ("prune:layers=9", "exceeds"), ("prune:heads=5", "multiple"),
                                      ("prune:depth=random", "depth must be")])
def test_prune_spec_errors(spec, msg):
    t = tiny_teacher()
    with pytest.raises(NanoError, match=msg):
        PruneSpec.parse(spec).check(t.cfg)


def test_prune_real_teacher_stays_runnable(smollm2):
    from nano_runtime.distill.prune import prune_model
    from nano_runtime.data import english_text
    cfg, sd, kept = prune_model(smollm2.model, smollm2.tokenizer, "prune:layers=28,hidden=1024",
                                english_text("calib"), seq_len=48, n_seqs=1)
    assert cfg.n_layers == 28 and len(kept) == 28 and cfg.hidden_dim == 1024
    s = build_model(cfg, sd).eval()
    ids = torch.tensor([smollm2.tokenizer.encode("The function returns a list of strings.")])
    with torch.no_grad():
        y = s(ids)
    assert torch.isfinite(y).all()


# ------------------------------------------------------------------- losses
def _pair(v=16, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g) * 2, torch.randn(n, v, generator=g) * 2


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("topk", [False, True])
def test_loss_zero_iff_equal(kind, topk):
    t, s = _pair()
    T = 2.0

    def teacher(x):
        return TopK.from_logits(x, 5, T) if topk else x
    assert float(kd_loss(t.clone(), teacher(t), kind, T)) == pytest.approx(0.0, abs=1e-5)
    assert float(kd_loss(s, teacher(t), kind, T)) > 1e-3


@pytest.mark.parametrize("kind", LOSSES)
def test_loss_gradient_points_to_the_teacher(kind):
    # two tokens: the gradient on the student's logit of token 0 has the sign of q0 - p0
    t = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    s = torch.tensor([[0.0, 0.0], [1.0, -1.0]], requires_grad=True)
    kd_loss(s, t, kind).backward()
    p, q = t.softmax(-1), s.detach().softmax(-1)
    assert torch.equal(torch.sign(s.grad[:, 0]), torch.sign(q[:, 0] - p[:, 0]))


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("topk", [False, True])
def test_loss_descent_step_reduces_it(kind, topk):
    t, s = _pair(seed=3)
    teacher = TopK.from_logits(t, 4) if topk else t
    s = s.requires_grad_(True)
    loss = kd_loss(s, teacher, kind)
    loss.backward()
    with torch.no_grad():
        after = kd_loss(s - 0.05 * s.grad / s.grad.norm(), teacher, kind)
    assert float(after) < float(loss)


def test_forward_kl_gradient_is_q_minus_p():
    t, s = _pair(seed=4)
    s.requires_grad_(True)
    T = 1.5
    kd_loss(s, t, "forward_kl", T).backward()
    expect = T * ((s.detach() / T).softmax(-1) - (t / T).softmax(-1)) / len(t)
    torch.testing.assert_close(s.grad, expect, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("topk", [False, True])
def test_shared_log_softmax_gives_the_same_losses_and_gradients(topk):
    """KD + CE at T = 1 share one log-softmax (trainer): values and gradients unchanged."""
    from nano_runtime.distill.losses import ce_loss
    t, s0 = _pair(seed=6)
    y = torch.randint(0, t.shape[-1], (len(t),), generator=torch.Generator().manual_seed(1))
    teacher = TopK.from_logits(t, 4) if topk else t
    grads = []
    for shared in (False, True):
        s = s0.clone().requires_grad_(True)
        lp = torch.log_softmax(s.float(), -1) if shared else None
        loss = 0.5 * ce_loss(s, y, student_logp=lp) + 0.5 * kd_loss(s, teacher, student_logp=lp)
        loss.backward()
        grads.append((float(loss), s.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-7, rtol=1e-5)


def test_vocab_mismatch_is_an_error():
    with pytest.raises(NanoError, match="vocabulary mismatch"):
        kd_loss(torch.zeros(3, 10), torch.zeros(3, 12))
    t = tiny_teacher()
    s = build_model(ModelConfig(**dict(TINY, vocab_size=300)), seed=0)
    data = PackedData(tokens(4), tokens(2))
    with pytest.raises(NanoError, match="vocabulary mismatch"):
        Trainer(s, DistillConfig(steps=1, batch=2), data, "/nonexistent", teacher=t,
                show_progress=False)


# --------------------------------------------------------------------- data
def test_pack_and_split_are_deterministic_and_disjoint(smollm2):
    from nano_runtime.data import english_text
    text = english_text("calib")[:20000]
    a = prepare(smollm2.tokenizer, text, 64, held_frac=0.2, seed=3)
    b = prepare(smollm2.tokenizer, text, 64, held_frac=0.2, seed=3)
    assert torch.equal(a.train, b.train) and torch.equal(a.held, b.held)
    assert a.train.shape[1] == 64 and len(a.held) == round(0.2 * (len(a.train) + len(a.held)))
    rows = {tuple(r) for r in a.train.tolist()}
    assert not any(tuple(r) in rows for r in a.held.tolist())
    assert pack(list(range(10)), 4, None).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_topk_cache_matches_live_teacher(tmp_path):
    t = tiny_teacher()
    data = PackedData(tokens(6), tokens(2, seed=9))
    p = str(tmp_path / "c.safetensors")
    build_topk_cache(t, data.train, p, k=8, temperature=2.0, show_progress=False)
    c = TopKCache(p, data.train, 2.0)
    live = TopK.from_logits(t(data.train[:2, :-1]), 8, 2.0)
    got = c.get(torch.tensor([0, 1]))
    assert torch.equal(got.ids, live.ids)
    torch.testing.assert_close(got.logp, live.logp, atol=2e-2, rtol=1e-3)
    with pytest.raises(NanoError, match="temperature"):
        TopKCache(p, data.train, 1.0)
    with pytest.raises(NanoError, match="other data"):
        TopKCache(p, tokens(6, seed=1), 2.0)


# ------------------------------------------------------------- training loop
def _trainer(out, steps=6, seed=0, **kw):
    t = tiny_teacher()
    s = tiny_teacher(seed=2, n_layers=2, hidden_dim=64)
    data = PackedData(tokens(16), tokens(4, seed=7))
    cfg = DistillConfig(steps=steps, batch=4, lr=3e-3, warmup=2, eval_every=3, ckpt_every=1,
                        seed=seed, **kw)
    return Trainer(s, cfg, data, str(out), teacher=t, show_progress=False)


class Killed(Exception):
    pass


@pytest.mark.parametrize("kw", [{}, {"on_policy": 0.5, "prompt_len": 8, "hidden_weight": 0.5}])
def test_resume_after_kill_is_bit_identical(tmp_path, kw):
    full = _trainer(tmp_path / "a", **kw)
    full.train()

    def kill(tr):
        if tr.step == 3:
            raise Killed()
    first = _trainer(tmp_path / "b", **kw)
    with pytest.raises(Killed):
        first.train(on_step=kill)
    again = _trainer(tmp_path / "b", **kw)
    assert again.resume() and again.step == 3
    again.train()
    for (k, v), (k2, v2) in zip(full.student.state_dict().items(),
                                again.student.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert [r[3] for r in full.history["train"]] == [r[3] for r in again.history["train"]]


def test_corrupt_checkpoint_is_a_clear_error_and_the_previous_one_is_kept(tmp_path):
    tr = _trainer(tmp_path, steps=4)
    tr.train()
    found = ckpt.list_checkpoints(str(tmp_path / "checkpoints"))
    assert [os.path.basename(p) for p in found] == ["step-000003", "step-000004"]
    w = os.path.join(found[-1], "weights.safetensors")
    with open(w, "r+b") as f:
        f.seek(os.path.getsize(w) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    fresh = _trainer(tmp_path, steps=4)
    with pytest.raises(NanoError, match="step-000004 is corrupt"):
        fresh.resume()
    assert os.path.isdir(found[0])
    assert fresh.resume(found[0]) and fresh.step == 3
    # a save that fails half-way leaves the existing checkpoints untouched
    with pytest.raises(Exception):
        ckpt.save(str(tmp_path / "checkpoints"), 5, {"x": "not a tensor"}, {"state": {},
                  "param_groups": []}, {})
    assert ckpt.list_checkpoints(str(tmp_path / "checkpoints")) == found
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.startswith(".tmp")]


def test_training_reduces_the_kd_loss_and_writes_curves(tmp_path):
    from nano_runtime.distill.trainer import plot_curves
    tr = _trainer(tmp_path, steps=12, bf16=True, grad_checkpointing=True, micro_batch=2)
    tr.train()
    losses = [r[3] for r in tr.history["train"]]
    assert losses[-1] < losses[0]
    assert tr.history["eval"] and 0 <= tr.history["eval"][-1][4] <= 1
    plot_curves(tr.history, str(tmp_path / "c.png"))
    assert os.path.getsize(tmp_path / "c.png") > 1000


# -------------------------------------------------------------- 2 processes
WORKER = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from test_distill import _trainer
    import tempfile
    tr = _trainer(tempfile.mkdtemp(), steps=3, parallel={parallel!r})
    tr.c.ckpt_every = 0
    tr.train()
    w = tr._full_weights()          # collective under FSDP2: every rank takes part
    if tr.dist.main:
        json.dump({{"loss": [r[3] for r in tr.history["train"]],
                   "w": float(sum(v.double().sum() for v in w.values()))}}, open({out!r}, "w"))
""")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_process_gloo_matches_single_process(tmp_path, parallel):
    single = _trainer(tmp_path / "one", steps=3)
    single.c.ckpt_every = 0
    single.train()
    out = str(tmp_path / "r.json")
    script = tmp_path / "w.py"
    script.write_text(WORKER.format(tests=os.path.join(ROOT, "tests"), root=ROOT,
                                    parallel=parallel, out=out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(script)], capture_output=True, text=True,
                       timeout=900, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.load(open(out))
    want = [r[3] for r in single.history["train"]]
    assert got["loss"] == pytest.approx(want, rel=1e-5, abs=1e-6)
    w = float(sum(v.double().sum() for v in single._full_weights().values()))
    assert got["w"] == pytest.approx(w, rel=1e-6)


# ------------------------------------------------------------ planner / CLI
def test_plan_cli_nano1_fits_and_a_small_gpu_is_refused():
    r = run_cli("distill", "--plan", "nano-1", "--gpus", "8", "--gpu-mem", "80", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["fits"] and p["total_gb"] <= 80 and p["tokens_per_s"] > 0
    assert set(p["memory_gb"]) >= {"student_weights_grads_optimizer", "activations", "teacher"}
    r = run_cli("distill", "--plan", "nano-2", "--gpus", "1", "--gpu-mem", "16")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "does not fit" in r.stderr
    assert "Traceback" not in r.stderr


def test_plan_shards_when_replication_cannot_fit():
    from nano_runtime.distill.planner import plan
    assert plan("nano-2", 8, 40).sharding == "fsdp"
    assert plan("nano-1", 8, 80).sharding == "ddp"


def test_distill_cli_end_to_end(tmp_path):
    from nano_runtime.formats.checkpoint import save_checkpoint
    from nano_runtime.loader import load_model, load_tokenizer
    from nano_runtime.data import english_text
    tok = load_tokenizer("smollm2-135m-instruct")
    cfg = ModelConfig(**dict(TINY, vocab_size=tok.vocab_size))
    t = build_model(cfg, seed=1)
    save_checkpoint(str(tmp_path / "teacher"), cfg, t.state_dict(), tok)
    (tmp_path / "d.txt").write_text(english_text("calib")[:6000])
    out = tmp_path / "student"
    r = run_cli("distill", "--teacher", tmp_path / "teacher", "--student", "prune:hidden=40,layers=3",
                "--data", tmp_path / "d.txt", "-o", out, "--steps", "2", "--batch", "2",
                "--seq-len", "32", "--eval-every", "1", "--ckpt-every", "1", "--teacher-cache", "4",
                "--calib", tmp_path / "d.txt", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["steps"] == 2 and res["final_ppl"] > 1
    lm = load_model(str(out))
    # MLP width 40 is zero-padded to 64 so int4 groups of 32 fit (same function)
    assert lm.config.n_layers == 3 and lm.config.hidden_dim == 64 and lm.tokenizer is not None
    assert lm.config.extra["hidden_padded_from"] == 40
    assert os.path.isfile(out / "curves.png")
    # the same directory again without --resume is refused; with it, nothing is left to do
    r = run_cli("distill", "--teacher", tmp_path / "teacher", "--student", "prune:hidden=48",
                "--data", tmp_path / "d.txt", "-o", out)
    assert r.returncode == 2 and "--resume" in r.stderr
    # a student with another vocabulary is refused
    other = ModelConfig(**dict(TINY, vocab_size=300))
    save_checkpoint(str(tmp_path / "other"), other, build_model(other, seed=0).state_dict())
    r = run_cli("distill", "--teacher", tmp_path / "teacher", "--student", tmp_path / "other",
                "--data", tmp_path / "d.txt", "-o", tmp_path / "x", "--seq-len", "32")
    assert r.returncode == 2 and "vocabulary mismatch" in r.stderr


def test_pad_hidden_keeps_the_function():
    from nano_runtime.distill.prune import pad_hidden
    t = tiny_teacher(hidden_dim=90)
    cfg, sd = pad_hidden(t.cfg, t.state_dict(), 32)
    assert cfg.hidden_dim == 96 and cfg.extra["hidden_padded_from"] == 90
    x = tokens(2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(build_model(cfg, sd)(x), t(x))


def test_time_driven_schedule_decays_with_training_time():
    from nano_runtime.distill.trainer import DistillConfig, lr_at
    c = DistillConfig(steps=10 ** 6, lr=1e-3, warmup=2, min_lr_ratio=0.1, schedule_minutes=1.0)
    assert lr_at(0, c) == pytest.approx(5e-4)                       # warmup is still by steps
    assert lr_at(5, c, seconds=0.0) == pytest.approx(1e-3)
    assert lr_at(5, c, seconds=30.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(5, c, seconds=60.0) == pytest.approx(1e-4)
    assert lr_at(5, c, seconds=90.0) == pytest.approx(1e-4)          # clamped after the budget
    s = DistillConfig(steps=12, lr=1e-3, warmup=2, min_lr_ratio=0.1)   # step-driven by default
    assert lr_at(12, s, seconds=1e9) == pytest.approx(1e-4)
    assert lr_at(7, s, seconds=1e9) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
