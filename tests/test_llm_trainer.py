"""The unlearning loop: the phase follows the batch under accumulation and several processes."""

import datetime
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from dualoptim.llm.data import SynthConfig, generate
from dualoptim.llm.model import ModelConfig, build_model
from dualoptim.llm.tokenizer import DEFAULT_TEMPLATE, train_tokenizer
from dualoptim.llm.trainer import QAData, UnlearnConfig, make_plan, run_llm_unlearning, shard
from dualoptim.optim import DualOptimizer, SharedOptimizer

TINY = ModelConfig(hidden=16, layers=1, heads=2, intermediate=32, max_len=64)


def _setup():
    torch.set_num_threads(1)
    data = generate(SynthConfig(n_authors=20, background_authors=1, seed=3))
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in data["full"]] + data["idk"], 400)
    forget = QAData(tok, data["forget01"][:24], data["idk"], DEFAULT_TEMPLATE, seed=0)
    retain = QAData(tok, data["retain99"][:48], data["idk"], DEFAULT_TEMPLATE, seed=1)
    return tok, forget, retain


@pytest.fixture(scope="module")
def setup():
    return _setup()


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_plan_schemes():
    cfg = UnlearnConfig(scheme="dual", epochs=2, batch_size=8)
    plan = make_plan(20, 50, cfg)
    assert [s.phase for s in plan] == ["forget", "retain"] * 6  # ceil(20/8)=3 forget batches per epoch
    assert sorted(i for s in plan[:6] for i in s.forget) == list(range(20))
    assert all(len(s.retain) == len(p.forget) for p, s in zip(plan[::2], plan[1::2]))
    joint = make_plan(20, 50, UnlearnConfig(scheme="joint", epochs=2, batch_size=8))
    assert len(joint) == 6 and all(s.phase == "joint" and s.forget and s.retain for s in joint)
    assert make_plan(20, 50, cfg) == plan  # a pure function of the config
    assert shard(tuple(range(8)), 1, 2, 2) == [(4, 5), (6, 7)]


@pytest.mark.parametrize("scheme", ["alternate", "dual", "joint"])
def test_phase_follows_batch_under_accumulation(setup, scheme):
    tok, forget, retain = setup
    model = build_model(TINY, tok, seed=0)
    seen: dict[int, list[tuple[str, tuple[int, ...]]]] = {}
    stepped: list[tuple[int, str, str]] = []

    def on_mb(step, phase, idx):
        seen.setdefault(step, []).append((phase, idx))

    def on_step(step, phase, opt):
        kind = DualOptimizer if scheme == "dual" else SharedOptimizer
        assert isinstance(opt, kind)
        stepped.append((step, phase, opt.phase))

    cfg = UnlearnConfig(method="idk+ap", scheme=scheme, epochs=1, batch_size=12, grad_accum=3)
    run_llm_unlearning(model, forget, retain, cfg, on_micro_batch=on_mb, on_step=on_step, progress=False)
    plan = make_plan(len(forget), len(retain), cfg)
    assert len(stepped) == len(plan)
    for s, step in enumerate(plan):
        phases = {p for p, _ in seen[s]}
        assert phases == {step.phase}  # every micro-batch of the optimizer step has the step's phase
        assert len(seen[s]) == 3 * (2 if scheme == "joint" else 1)
        expected_opt_phase = "forget" if step.phase == "joint" else step.phase
        assert stepped[s] == (s, step.phase, expected_opt_phase)
        if step.phase == "forget":
            assert sorted(i for _, mb in seen[s] for i in mb) == sorted(step.forget)


@pytest.mark.parametrize("method", ["me+gd", "npo+gd"])
def test_accumulation_equals_big_batch(setup, method):
    tok, forget, retain = setup
    finals = []
    for accum in (1, 4):
        model = build_model(TINY, tok, seed=0)
        cfg = UnlearnConfig(method=method, scheme="dual", epochs=1, batch_size=12, grad_accum=accum,
                            forget_lr=1e-2)
        run_llm_unlearning(model, forget, retain, cfg, progress=False)
        finals.append(_params(model))
    start = _params(build_model(TINY, tok, seed=0))
    assert not torch.allclose(finals[0], start)
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-4, atol=1e-5)


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=120))  # a hang bound, not a timing
    try:
        tok, forget, retain = _setup()
        model = build_model(TINY, tok, seed=0)
        cfg = UnlearnConfig(method="npo+gd", scheme="dual", epochs=1, batch_size=12, grad_accum=2, forget_lr=1e-2)
        run_llm_unlearning(model, forget, retain, cfg, progress=False)
        if rank == 0:
            torch.save(_params(model), out)
        # every rank done before any tears gloo down: a rank that destroyed its group while the other still
        # had gloo traffic in flight was seen to abort ("terminate called without an active exception")
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_equal_one_process(setup, tmp_path):
    tok, forget, retain = setup
    model = build_model(TINY, tok, seed=0)
    cfg = UnlearnConfig(method="npo+gd", scheme="dual", epochs=1, batch_size=12, grad_accum=1, forget_lr=1e-2)
    run_llm_unlearning(model, forget, retain, cfg, progress=False)
    out = str(tmp_path / "rank0.pt")
    init = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_worker, args=(2, init, out), nprocs=2, join=True)
    torch.testing.assert_close(torch.load(out), _params(model), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheme", ["dual", "joint"])
def test_hf_trainer_equals_own_loop(setup, tmp_path, scheme):
    from transformers import TrainingArguments

    from dualoptim.llm.hf import DualOptimTrainer

    tok, forget, retain = setup
    # 24 forget items in global batches of 10: the last step (4 items) has short, padded micro-batches
    cfg = UnlearnConfig(method="idk+ap", scheme=scheme, epochs=1, batch_size=10, grad_accum=2, forget_lr=1e-2)
    own = build_model(TINY, tok, seed=0)
    run_llm_unlearning(own, forget, retain, cfg, progress=False)
    model = build_model(TINY, tok, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=5, gradient_accumulation_steps=2,
                             max_grad_norm=1.0, lr_scheduler_type="constant",
                             learning_rate=1e-2, save_strategy="no", report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True)
    trainer = DualOptimTrainer(model=model, args=args, unlearn_config=cfg, forget=forget, retain=retain)
    trainer.train()
    assert trainer.state.global_step == len(make_plan(len(forget), len(retain), cfg))
    torch.testing.assert_close(_params(model), _params(own), rtol=1e-4, atol=1e-5)


def test_lora_trains_adapters_only(setup):
    from dualoptim.llm.model import apply_lora

    tok, forget, retain = setup
    model = apply_lora(build_model(TINY, tok, seed=0), r=4, alpha=16)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    cfg = UnlearnConfig(method="npo+gd", scheme="dual", epochs=1, batch_size=12, forget_lr=1e-2)
    res = run_llm_unlearning(model, forget, retain, cfg, progress=False)
    assert res["trainable_params"] == sum(p.numel() for p in lora.values())
    named = dict(model.named_parameters())
    assert all(torch.equal(named[n], v) for n, v in frozen.items())
    assert any(not torch.equal(named[n], v) for n, v in lora.items())


def test_retain_every_and_schedule():
    from dualoptim.errors import ConfigError
    from dualoptim.llm.trainer import lr_factor

    cfg = UnlearnConfig(scheme="dual", epochs=2, batch_size=8, retain_every=5)
    plan = make_plan(16, 50, cfg)
    assert [s.phase for s in plan] == (["forget"] + ["retain"] * 5) * 4  # Algorithm 1: T_f = 1, T_r = 5
    assert all(len(s.retain) == 8 for s in plan if s.phase == "retain")
    with pytest.raises(ConfigError, match="retain_every"):
        UnlearnConfig(scheme="joint", retain_every=5)
    paper = UnlearnConfig(epochs=5, warmup_epochs=1, schedule="linear")
    f = lr_factor(paper, n_steps=50, steps_per_epoch=10)  # 1 epoch warm-up, then linear decay to 0
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0) and f(30) == pytest.approx(0.5) and f(49) == pytest.approx(1 / 40)
    assert lr_factor(UnlearnConfig(), 50, 10)(30) == 1.0


def test_schedule_moves_both_phases_lrs(setup):
    tok, forget, retain = setup
    lrs = []
    cfg = UnlearnConfig(method="ga+gd", scheme="dual", epochs=2, batch_size=12, forget_lr=1e-3, retain_lr=2e-3,
                        warmup_epochs=1, schedule="linear")
    run_llm_unlearning(build_model(TINY, tok, seed=0), forget, retain, cfg, progress=False,
            on_step=lambda s, phase, opt: lrs.append(tuple(next(g["lr"] for g in opt.param_groups if g["phase"] == ph)
                                                           for ph in ("forget", "retain"))))
    assert lrs[0][0] < lrs[3][0] and lrs[3][1] / lrs[3][0] == pytest.approx(2.0)
    assert lrs[-1][0] < lrs[4][0]


def _hf_args(tmp_path, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), save_strategy="no", report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True, lr_scheduler_type="constant", **kw)


def test_hf_trainer_with_hf_defaults_and_lora(setup, tmp_path):
    """HF's default TrainingArguments (per-device batch 8, no accumulation, 3 epochs, linear schedule) and LoRA:
    every example of the plan is used once per step and the run has exactly the plan's steps."""
    from dualoptim.llm.hf import DualOptimTrainer, unlearn_config_for
    from dualoptim.llm.model import AdapterDisabled, apply_lora

    tok, forget, retain = setup
    args = _hf_args(tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 1)
    cfg = unlearn_config_for(args, method="npo+gd", scheme="dual", epochs=1, forget_lr=1e-2)
    assert cfg.batch_size == 8
    own = apply_lora(build_model(TINY, tok, seed=0), r=4, alpha=16)
    run_llm_unlearning(own, forget, retain, cfg, progress=False)
    model = apply_lora(build_model(TINY, tok, seed=0), r=4, alpha=16)
    trainer = DualOptimTrainer(model=model, args=args, unlearn_config=cfg, forget=forget, retain=retain)
    assert isinstance(trainer.ref_model, AdapterDisabled)
    seen = []
    original = trainer.compute_loss

    def spy(model, inputs, **kw):
        seen.append(sum(len(inputs[k]["qa"]["input_ids"]) for k in ("forget", "retain") if inputs[k] is not None))
        return original(model, inputs, **kw)

    trainer.compute_loss = spy
    trainer.train()
    plan = make_plan(len(forget), len(retain), cfg)
    assert trainer.state.global_step == len(plan) and seen == [len(s.forget) or len(s.retain) for s in plan]
    torch.testing.assert_close(_params(model), _params(own), rtol=1e-4, atol=1e-5)


def test_hf_trainer_refuses_a_batch_mismatch(setup, tmp_path):
    from dualoptim.errors import ConfigError
    from dualoptim.llm.hf import DualOptimTrainer

    tok, forget, retain = setup
    args = _hf_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match="per_device_train_batch_size=4 x gradient_accumulation_steps=2"):
        DualOptimTrainer(model=build_model(TINY, tok, seed=0), args=args, forget=forget, retain=retain,
                         unlearn_config=UnlearnConfig(method="me+gd", batch_size=16, grad_accum=1))


def test_divergence_is_reported_by_the_core_check(setup):
    """A NaN loss stops the loop with the engine's DivergenceError (the benchmark stores it as a diverged row)."""
    from dualoptim.errors import DivergenceError

    tok, forget, retain = setup
    model = build_model(TINY, tok, seed=0)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match="forget loss at step 0 .* became nan; lower the learning rate"):
        run_llm_unlearning(model, forget, retain, UnlearnConfig(method="ga+gd", scheme="dual", epochs=1),
                           progress=False)


def test_train_lm_divergence_is_a_divergence_error(setup):
    """Pre-training/fine-tuning (``llm prepare``) stops on a NaN loss with the core DivergenceError (a one-line CLI
    error, a diverged row in a benchmark), naming the stage and the step."""
    from dualoptim.errors import DivergenceError
    from dualoptim.llm.model import TrainConfig, train_lm

    tok, forget, _ = setup
    model = build_model(TINY, tok, seed=0)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match=r"^base: loss at step 0 became nan; lower the learning rate"):
        train_lm(model, forget.qa, TrainConfig(epochs=1, batch_size=8), desc="base")


def test_core_finite_checks():
    from dualoptim.engine import check_finite, check_parameters
    from dualoptim.errors import DivergenceError

    assert check_finite(1.5, "x") == 1.5
    with pytest.raises(DivergenceError, match="^retain loss became inf; lower it$"):
        check_finite(float("inf"), "retain loss", "lower it")
    model = torch.nn.Linear(2, 2)
    check_parameters(model, 3)
    with torch.no_grad():
        model.bias[0] = float("nan")
    with pytest.raises(DivergenceError, match="parameters bias became NaN/inf by step 3"):
        check_parameters(model, 3)
