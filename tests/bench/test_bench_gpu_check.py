"""bench/gpu_check.py: the fp16 check can fail (the fused-AdamW case that accelerate's flag misses), the MFU
formula, one GPU pinned, a missing module named; end to end on CPU: a failing side is recorded and the rest
runs, the JSON is rewritten after every side, the time limit skips parts saying why. The whole check in the
offline node's environment, through the README's command, is tests/test_gpu_pack.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, Trainer, TrainerCallback, TrainingArguments

from helpers import REPO, SHARED, require_shared, tokenizer_path
from simcse.modeling.models import BertForCL, configure

sys.path.insert(0, str(REPO / "bench"))
from gpucheck import environment, probes  # noqa: E402


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----- the fp16 check ----------------------------------------------------------------------------------


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        return {"loss": ((self.linear(x).squeeze(-1) - y) ** 2).mean()}


class _ScaledTrainer(Trainer):
    """The Trainer with fp16's GradScaler in its CPU form (accelerate makes none on CPU) and, at step 2, an
    inf gradient with a finite loss: an fp16 overflow, which the scaler must skip."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        self.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.state.global_step == 1:  # computing step 2
            model.linear.weight.grad.fill_(float("inf"))
        return loss


class _Record(TrainerCallback):
    """accelerate's flag and the weights after every step."""

    def __init__(self):
        self.trainer, self.flags, self.weights = None, [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.flags.append(self.trainer.accelerator.optimizer_step_was_skipped)
        self.weights.append(self.trainer.model.linear.weight.detach().clone())


def test_fp16_check_sees_the_skipped_step_that_accelerates_flag_misses(tmp_path):
    """With the fused AdamW the Trainer defaults to, GradScaler.step always calls the optimizer's step (the
    kernel skips inside), so accelerate's optimizer_step_was_skipped stays False on the skipped step. The
    check of every gpu_check side reads the scaler's scale instead: this test fails if it reads the flag."""
    torch.manual_seed(0)
    data = [{"x": torch.randn(4), "y": torch.randn(())} for _ in range(16)]
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, max_steps=3, use_cpu=True,
                             report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True)
    assert args.optim == "adamw_torch_fused"  # the default this is about
    probe, record = probes.TrainerProbe(probes.StepClock(cuda=False, warmup=1)), _Record()
    trainer = _ScaledTrainer(model=_Regression(), args=args, train_dataset=data, callbacks=[probe, record])
    probe.trainer = record.trainer = trainer
    trainer.train()
    assert torch.equal(record.weights[0], record.weights[1]), "the scaler did not skip step 2"
    assert not torch.equal(record.weights[1], record.weights[2])
    assert record.flags == [False, False, False]  # accelerate cannot tell: a check reading it never fails
    assert probe.skipped() == [False, True, False]  # the scale went down at step 2 only
    assert probe.trace.scales() == [2.0**10, 2.0**10, 2.0**9, 2.0**9]


def test_scale_trace_reads_the_device_scale_once_per_step_without_waiting():
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    trace = probes.ScaleTrace(scaler)
    assert trace.values == [8.0]  # no scale tensor yet: the initial scale
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([parameter], fused=True)
    for grad in (1.0, float("nan"), 1.0):
        scaler.scale(parameter.sum()).backward()
        parameter.grad.fill_(grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        trace.after_step()
    assert all(torch.is_tensor(v) for v in trace.values[1:])  # copies of the device tensor, read at the end
    assert trace.skipped() == [False, True, False]


# ----- MFU ---------------------------------------------------------------------------------------------


def test_training_flops_are_6_n_t_as_transformers_counts_them():
    assert probes.training_flops(85_000_000, 4096) == 6 * 85_000_000 * 4096
    config = configure(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=37), pooler_type="cls")
    model = BertForCL(config)
    n = probes.non_embedding_parameters(model)
    assert n == model.num_parameters(exclude_embeddings=True)
    ids = torch.randint(5, 120, (4, 2, 9))  # 4 pairs of 9 tokens: 72 token positions
    counted = Trainer.floating_point_ops(SimpleNamespace(model=model), {"input_ids": ids})  # what the Trainer counts
    assert probes.training_flops(n, ids.numel()) == counted == 6 * n * 72


def test_peak_and_mfu():
    assert probes.peak_tflops("NVIDIA H100 80GB HBM3", "bf16", tf32=False)[0] == 989.4
    assert probes.peak_tflops("NVIDIA H100 80GB HBM3", "fp32", tf32=False)[0] == 66.9
    assert probes.peak_tflops("NVIDIA H100 80GB HBM3", "fp32", tf32=True)[0] == 494.7
    assert probes.peak_tflops("NVIDIA H100 PCIe", "fp16", tf32=False)[0] == 756.0
    assert probes.peak_tflops("NVIDIA H200", "bf16", tf32=False)[0] == 989.4
    assert probes.peak_tflops("NVIDIA H200 NVL", "bf16", tf32=False)[0] == 835.5
    peak, why = probes.peak_tflops("NVIDIA GeForce RTX 3090", "fp16", tf32=False)
    assert peak is None and "RTX 3090" in why
    assert probes.peak_tflops(None, "fp32", tf32=False)[0] is None
    # 2e12 FLOPs a step at 50 steps/s: 100 TFLOPS achieved, a tenth of a 1000-TFLOPS peak
    assert probes.utilisation(2e12, 50.0, 1000.0) == {"achieved_tflops": 100.0, "mfu": 0.1}
    assert probes.utilisation(2e12, None, 1000.0) == {"achieved_tflops": None, "mfu": None}


def test_step_clock_times_the_steps_after_the_warmup():
    clock = probes.StepClock(cuda=False, warmup=2)
    for step in range(1, 6):
        clock.mark(last=step == 5)
    window = clock.window()
    assert window["timed_steps"] == 3 and window["seconds"] == clock.host[-1] - clock.host[1]
    assert window["event_seconds"] is None  # CUDA events only on CUDA


# ----- environment -------------------------------------------------------------------------------------


@pytest.mark.parametrize("before, after", [(None, "0"), ("3", "3"), ("2,3", "2"), ("GPU-1a2b,GPU-3c4d", "GPU-1a2b"),
                                           ("", ""), ("-1", "-1")])
def test_exactly_one_gpu_is_made_visible(before, after):
    env = {} if before is None else {"CUDA_VISIBLE_DEVICES": before}
    visible = environment.pin_one_gpu(env)
    assert env["CUDA_VISIBLE_DEVICES"] == after and visible["before"] == before and visible["after"] == after
    if before in ("", "-1"):
        assert "hides every GPU" in visible["note"]


def test_preflight_names_a_missing_module():
    found = environment.preflight(required=("json", "no_such_module_for_gpu_check"), optional=("also_missing_x",))
    assert found["missing"] == ["no_such_module_for_gpu_check"] and found["missing_optional"] == ["also_missing_x"]
    assert "ModuleNotFoundError" in found["errors"]["no_such_module_for_gpu_check"]


# ----- end to end on CPU -------------------------------------------------------------------------------


def shared_inputs() -> list[str]:
    train = SHARED / "data" / "train"
    return ["--tokenizer", str(tokenizer_path("bert-base-uncased")),
            "--train_file", str(require_shared(train / "wiki1m_for_simcse.head11913.txt", "the wiki1m sample")),
            "--nli_file", str(require_shared(train / "nli_snli_devtest_for_simcse.csv", "the NLI triplets")),
            "--sts_data", str(require_shared(SHARED / "data", "the SentEval data"))]


@pytest.mark.slow
def test_a_failing_side_is_recorded_the_others_run_and_the_json_follows_every_side(tmp_path, capsys, monkeypatch):
    gpu_check = load_gpu_check()
    from gpucheck import sides

    def broken(*args):
        raise RuntimeError("boom on purpose")

    monkeypatch.setitem(sides.RUNNERS, "ours", broken)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    writes = []
    save = gpu_check.Report.save

    def counted(self):
        save(self)
        writes.append(json.loads(self.path.read_text()))

    monkeypatch.setattr(gpu_check.Report, "save", counted)
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--tiny", "--parts", "unsup", "sts", "--precisions", "fp32", "--skip_sts",
                           *shared_inputs(), "--output_json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    payload = json.loads(out.read_text())
    unsup = payload["parts"]["unsup"]
    assert [(s["name"], s["status"]) for s in unsup["sides"]] == [("floor fp32", "ok"), ("ours fp32", "error"),
                                                                  ("peer fp32", "ok")]
    assert "boom on purpose" in unsup["sides"][1]["error"] and unsup["status"] == "error"
    floor = unsup["sides"][0]
    assert floor["steps_per_s"] > 0 and floor["tokens_per_step"] > 0 and floor["flops_per_step"] > 0
    assert floor["mfu"] is None and "no GPU" in floor["peak_note"] and floor["leaves_out"]
    # rewritten after every side: the floor alone, then with ours' error, then with the peer
    sides_seen = [len(w["parts"].get("unsup", {}).get("sides", [])) for w in writes]
    assert {1, 2, 3} <= set(sides_seen)
    assert payload["checks"]["no_side_errors"] is False and payload["exit_status"] == 1
    assert payload["parts"]["sts"] == {"status": "skipped", "budget_s": 40, "sides": [], "reason": "--skip_sts"}
    assert "sts: skipped (--skip_sts)" in printed
    assert payload["parts"]["gradcache"]["status"] == "skipped"  # not in --parts
    env = payload["environment"]
    assert env["cuda_visible_devices"]["after"] == "0" and env["versions"]["transformers"]
    assert set(env["tf32"]) >= {"matmul_allow_tf32", "cudnn_allow_tf32", "fp32_matmuls_use_tf32"}
    assert env["gpu"] is None and env["modules"]["missing"] == []


@pytest.mark.slow
def test_the_time_limit_skips_parts_and_says_why(tmp_path, capsys, monkeypatch):
    gpu_check = load_gpu_check()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--tiny", "--time_limit", "0.5", *shared_inputs(), "--output_json", str(out)])
    payload = json.loads(out.read_text())
    assert code == 1 and payload["checks"] == {"no_side_errors": True, "no_part_cut_by_the_time_limit": False}
    for part in gpu_check.PARTS:
        assert payload["parts"][part]["status"] == "skipped"
        assert payload["parts"][part]["reason"].startswith("time limit:")
    assert "gradcache: skipped (time limit:" in capsys.readouterr().out
