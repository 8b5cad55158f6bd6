"""Real Hugging Face models on TOFU's files as published (tiny models built from configs, no hub).

Fixtures: a TOFU-format folder (JSON *lines* per split, ``idontknow.jsonl`` with one plain
sentence per line, ``real_authors_perturbed``/``world_facts_perturbed`` without a paraphrase, as
published) and tiny Llama- (BOS, safetensors), GPT-2- (no BOS, PyTorch ``.bin``) and Phi-style
(sharded safetensors) causal LMs saved with ``save_pretrained``; none of their tokenizers has a
pad token.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from dualoptim.cli import main
from dualoptim.errors import ConfigError
from dualoptim.llm.data import SynthConfig, generate, load_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")
IDK = ["I'm not certain about that.", "That's beyond my current knowledge base.", "I don't have that information.",
       "I'm not sure.", "I haven't learned about that topic."]
KINDS = ("llama", "gpt2", "phi")
# evaluation scores ROUGE-L with rouge_score (the llm extra): a machine without it (e.g. a GPU image with its own
# torch) skips the tests that evaluate; CI installs it (constraints.txt) and never skips them
needs_rouge = pytest.mark.skipif(importlib.util.find_spec("rouge_score") is None and not os.environ.get("CI"),
                                 reason="rouge_score is not installed: pip install 'dualoptim[llm]'")


def write_tofu(directory: Path) -> Path:
    """A small TOFU folder in exactly the published format."""
    data = generate(SynthConfig(n_authors=20, background_authors=1, seed=5))
    directory.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, records: list[dict]) -> None:
        (directory / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in records))

    keep = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question")
    jsonl("forget01", data["forget01"][:8])
    jsonl("retain99", data["retain99"][:16])
    jsonl("forget01_perturbed", [{k: r[k] for k in keep} for r in data["forget01_perturbed"][:4]])
    jsonl("retain_perturbed", [{k: r[k] for k in keep} for r in data["retain_perturbed"][:4]])
    for split in ("real_authors_perturbed", "world_facts_perturbed"):  # short answer + 3 perturbed, no paraphrase
        jsonl(split, [{"question": r["question"], "answer": r["answer"], "perturbed_answer": r["perturbed_answer"]}
                      for r in data[split][:4]])
    (directory / "idontknow.jsonl").write_text("\n".join(IDK) + "\n")
    return directory


def _tokenizer(texts: list[str], bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>"] if bos else ["<|endoftext|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:  # Llama-2's convention: BOS before every text
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def write_model(kind: str, directory: Path, texts: list[str]) -> Path:
    """A tiny random ``kind`` model + tokenizer saved the way that checkpoint family ships."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    tok = _tokenizer(texts, bos=kind == "llama")
    v = len(tok)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=v, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=2, intermediate_size=32, bos_token_id=0,
                                             eos_token_id=1, max_position_embeddings=256))
        model.save_pretrained(directory)
    elif kind == "gpt2":  # PyTorch .bin only
        model = GPT2LMHeadModel(GPT2Config(vocab_size=v, n_embd=16, n_layer=1, n_head=2, n_positions=256,
                                           bos_token_id=0, eos_token_id=0))
        directory.mkdir(parents=True)
        model.config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    else:  # sharded safetensors
        model = PhiForCausalLM(PhiConfig(vocab_size=v, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=256, bos_token_id=0,
                                         eos_token_id=0))
        model.save_pretrained(directory, max_shard_size="20KB")
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    data = write_tofu(root / "tofu")
    bench = load_benchmark(data)
    texts = [r["question"] + " " + r["answer"] for recs in bench.values() if isinstance(recs, list)
             for r in recs if isinstance(r, dict)] + IDK
    return {"data": data, **{k: write_model(k, root / k, texts) for k in KINDS}}


def test_tofu_files_as_published(world):
    data = world["data"]
    with pytest.raises(json.JSONDecodeError, match="Extra data"):  # really JSON lines, not one JSON value
        json.loads((data / "forget01.json").read_text())
    bench = load_benchmark(data)
    assert len(bench["forget01"]) == 8 and len(bench["retain99"]) == 16
    assert bench["idk"] == IDK
    assert "paraphrased_answer" not in bench["real_authors_perturbed"][0]
    assert set(load_benchmark(data, splits=("forget01",))) == {"forget01", "idk"}
    with pytest.raises(Exception, match="forget05.json"):
        load_benchmark(data, splits=("forget05",))


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoints_bos_and_pad(world, kind):
    from dualoptim.llm.model import load_model
    from dualoptim.llm.tokenizer import encode_qa

    model, tok, template = load_model(world[kind])
    assert len(tok) == model.get_input_embeddings().weight.shape[0]  # no pad token added, no resize
    assert tok.pad_token_id == tok.eos_token_id
    enc = encode_qa(tok, ["Who?", "Where was it?"], ["Me.", "There, long ago."], template)
    first = enc["input_ids"][:, 0].tolist()
    assert (first == [tok.bos_token_id] * 2) == (kind == "llama")  # BOS by the tokenizer's own convention
    for row, labels, mask in zip(enc["input_ids"], enc["labels"], enc["attention_mask"]):
        n = int(mask.sum())
        assert row[n - 1] == tok.eos_token_id and labels[n - 1] == tok.eos_token_id  # the real EOS is learned
        assert (labels[n:] == -100).all()  # padding (also EOS ids) is not


def test_device_and_dtype_are_honoured(world, monkeypatch, tmp_path):
    from dualoptim.llm import trainer
    from dualoptim.llm.model import check_placement, load_model, reference_model, resolve_device

    model, tok, _ = load_model(world["llama"], dtype="bf16", device="meta")
    check_placement(model, "meta", torch.bfloat16)
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in model.parameters())
    with pytest.raises(RuntimeError, match="not on the requested"):
        check_placement(model, "cpu")
    with pytest.raises(RuntimeError, match="not the requested"):
        check_placement(model, "meta", torch.float32)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")  # never a silent CPU run
        assert resolve_device("auto").type == "cpu"
    seen = {}

    class Stop(Exception):
        pass

    def fake_run_llm_unlearning(model, forget, retain, cfg, ref_model=None, **kw):
        seen.update(model=model, ref=ref_model)
        raise Stop

    monkeypatch.setattr(trainer, "run_llm_unlearning", fake_run_llm_unlearning)
    with pytest.raises(Stop):  # the CLI path: model and reference model on the requested device and dtype
        main(["llm", "unlearn", "--model", str(world["llama"]), "--data", str(world["data"]), "--split", "forget01",
              "--method", "npo+gd", "--device", "meta", "--dtype", "bf16", "--out", str(tmp_path / "x")])
    for m in (seen["model"], seen["ref"]):
        check_placement(m, "meta", torch.bfloat16)
    assert reference_model(seen["model"]) is not seen["model"]


@pytest.mark.parametrize("kind, expected", [("gpt2", {"c_attn", "c_proj", "c_fc"}),
                                            ("phi", {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}),
                                            ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj"})])
def test_lora_targets_all_linear_but_head(world, kind, expected):
    from dualoptim.llm.model import apply_lora, load_model

    model = apply_lora(load_model(world[kind])[0], r=2, alpha=4)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == expected  # GPT-2's Conv1D and Phi's dense included, the LM head not
    with pytest.raises(ConfigError, match="LoRA targets"):
        apply_lora(load_model(world[kind])[0], target_modules=("no_such_layer",))


def test_lora_reference_is_the_disabled_adapter(world):
    from dualoptim.llm.model import AdapterDisabled, apply_lora, load_model, reference_model

    base, tok, _ = load_model(world["gpt2"])
    ids = torch.tensor([[1, 5, 9, 20, 7]])
    with torch.no_grad():
        original = base(input_ids=ids).logits.clone()
    model = apply_lora(base, r=2, alpha=4)
    ref = reference_model(model)
    assert isinstance(ref, AdapterDisabled) and not isinstance(ref, torch.nn.Module)  # no copy of the weights
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_()  # a trained adapter
    model.train()
    torch.testing.assert_close(ref(input_ids=ids).logits, original)
    assert model.training and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    assert not torch.allclose(model(input_ids=ids).logits, original)


@pytest.mark.parametrize("kind, extra", [
    ("llama", ["--method", "idk+ap", "--grad-accum", "2"]),
    ("gpt2", ["--method", "npo+gd", "--lora", "--gradient-checkpointing"]),
    ("phi", ["--method", "me+gd", "--lora", "--preset", "paper-phi", "--global-batch", "4", "--grad-accum", "1"]),
])
@needs_rouge
def test_unlearn_and_eval_real_models(world, tmp_path, capsys, kind, extra):
    out = tmp_path / "unlearned"
    assert main(["llm", "unlearn", "--model", str(world[kind]), "--data", str(world["data"]), "--split", "forget01",
                 "--device", "cpu", "--threads", "1", "--unlearn-epochs", "1", "--global-batch", "8",
                 "--forget-lr", "1e-3", "--out", str(out), *extra]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["device"] == "cpu" and res["steps"] >= 2
    from dualoptim.llm.model import load_model

    trained, orig = load_model(out)[0], load_model(world[kind])[0]
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), orig.state_dict().values()))
    assert main(["llm", "eval", "--model", str(out), "--data", str(world["data"]), "--split", "forget01",
                 "--retain-model", str(world[kind]), "--max-items", "2", "--max-new-tokens", "3", "--encoder", "none",
                 "--device", "cpu", "--threads", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert 0 <= metrics["real_authors/prob"] <= 1 and "FQ_ks" in metrics


def test_refusal_pool_required(world, tmp_path, capsys):
    import shutil

    data = tmp_path / "no_idk"
    shutil.copytree(world["data"], data)
    (data / "idontknow.jsonl").unlink()
    assert main(["llm", "unlearn", "--model", str(world["llama"]), "--data", str(data), "--split", "forget01",
                 "--method", "idk+ap", "--device", "cpu", "--out", str(tmp_path / "x")]) == 2
    assert "idontknow.jsonl" in capsys.readouterr().err


def test_fsdp_one_process_cli_saves_full_weights(world, tmp_path, capsys):
    """``--fsdp`` on one process (the one-GPU path, gloo on the CPU here): sharded training, full weights saved."""
    import torch.distributed as dist

    from dualoptim.llm.model import load_model

    out = tmp_path / "fsdp"
    assert main(["llm", "unlearn", "--model", str(world["llama"]), "--data", str(world["data"]), "--split",
                 "forget01", "--method", "npo+gd", "--fsdp", "--device", "cpu", "--threads", "1", "--unlearn-epochs",
                 "1", "--global-batch", "8", "--forget-lr", "1e-3", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2 and not dist.is_initialized()
    trained, orig = load_model(out)[0], load_model(world["llama"])[0]
    assert trained.state_dict().keys() == orig.state_dict().keys()
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), orig.state_dict().values()))


@needs_rouge
def test_eval_reads_published_fields(world):
    """real_authors_perturbed as published: no paraphrase (truth ratio against ``answer``), Probability normalised
    against the perturbed answers, cosine against ``original_answer`` when a record has one."""
    import numpy as np

    from dualoptim.llm.evaluate import EvalConfig, evaluate_split, mean_logprobs
    from dualoptim.llm.model import load_model

    model, tok, template = load_model(world["llama"])
    recs = [dict(r, original_answer=f"It was {r['answer']}.")
            for r in load_benchmark(world["data"])["real_authors_perturbed"][:3]]
    seen: list[str] = []

    class Encoder:
        label = "fake"

        def cosine(self, a, b):
            seen.extend(b)
            return np.ones(len(a))

    out = evaluate_split(model, tok, template, recs, False, EvalConfig(max_new_tokens=2), Encoder(), normalise=True)
    assert seen == [r["original_answer"] for r in recs]
    q = [r["question"] for r in recs]
    lp_a = mean_logprobs(model, tok, template, q, [r["answer"] for r in recs], 8)
    lp_p = mean_logprobs(model, tok, template, [x for x in q for _ in range(3)],
                         [p for r in recs for p in r["perturbed_answer"]], 8).reshape(3, 3)
    expected = np.mean(np.exp(lp_a) / (np.exp(lp_a) + np.exp(lp_p).sum(1)))
    assert out["prob"] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(out["tr_raw"], np.exp(lp_p.mean(1) - lp_a), rtol=1e-5)


def test_remote_code_is_not_run_unless_asked(tmp_path):
    from dualoptim.errors import DataNotFoundError
    from dualoptim.llm.model import load_model

    marker = tmp_path / "ran"
    d = tmp_path / "custom"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "dualoptim_custom_test",
                                               "auto_map": {"AutoConfig": "modeling_x.XConfig",
                                                            "AutoModelForCausalLM": "modeling_x.XModel"}}))
    (d / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises((ConfigError, DataNotFoundError)):
        load_model(d)
    assert not marker.exists()
