"""The training framework: losses, the loop, checkpoints and resume, signals, DDP, export and the CLI.

Tiny networks (the ``smoke`` config) on a small deterministic in-memory dataset, all on the CPU.
"""

from __future__ import annotations

import csv
from dataclasses import replace
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # training/ is not installed with the plugin
    sys.path.insert(0, str(REPO))

from napari_refocusgan.core.errors import RefocusError  # noqa: E402
from training import train as train_mod  # noqa: E402
from training.__main__ import main as cli_main  # noqa: E402
from training.configs import get_config  # noqa: E402
from training.losses import (  # noqa: E402
    ContentLoss,
    PatchCritic,
    VGG19Conv33,
    critic_loss,
    load_vgg19_conv33,
)
from training.train import lr_factor, load_checkpoint, save_checkpoint, train  # noqa: E402

FAKE_DATASET = '''
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class PairDataset(Dataset):
    """Blurred → sharp pairs, deterministic per index: input = 5×5 box blur of a random image (+ extra
    channels: a focus-like map for G1, the sharp image for G2)."""

    def __init__(self, task, n=4, size=32, channels=4):
        self.task, self.n, self.size, self.channels = task, n, size, channels

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1234 + i)
        sharp = torch.rand(1, 3, self.size // 4, self.size // 4, generator=g)
        sharp = F.interpolate(sharp, size=(self.size, self.size), mode="nearest")[0] * 2 - 1
        blurred = F.avg_pool2d(sharp[None], 5, 1, 2, count_include_pad=False)[0]
        extra = sharp if self.channels == 6 else (sharp - blurred).abs().mean(0, keepdim=True) * 2 - 1
        item = {"input": torch.cat([blurred, extra][: 1 if self.channels == 3 else 2]), "target": sharp}
        if self.task == "deblur":  # "in focus": where the blur left the image unchanged (flat patches)
            item["in_focus"] = ((sharp - blurred).abs().amax(0, keepdim=True) < 0.05).float()
        if self.task == "refocus":
            item["delta"] = torch.tensor(float(i % 19 - 9))
        return item
'''
_namespace: dict = {}
exec(FAKE_DATASET, _namespace)
PairDataset = _namespace["PairDataset"]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # relative defaults (the scene cache in runs/cache) land in the test's folder, never in the repository
    monkeypatch.chdir(tmp_path)


def smoke(task: str = "deblur", **overrides):
    return get_config("smoke", task, **overrides)


def datasets(task: str = "deblur", n: int = 4):
    channels = 4 if task == "deblur" else 6
    return {"dataset": PairDataset(task, n=n, channels=channels), "val_dataset": PairDataset(task, n=2, channels=channels)}


# ------------------------------------------------------------------------------------------- losses


def test_patch_critic_matches_deblurgan_layout():
    critic = PatchCritic(7, ndf=8, n_layers=3)
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (7, 8, 2), (8, 16, 2), (16, 32, 2), (32, 64, 1), (64, 1, 1)
    ]  # fmt: skip
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)
    # 4×4 kernels with padding 2: 32 → 17 → 9 → 5 at stride 2, then 6 → 7 at stride 1
    assert critic(torch.zeros(2, 7, 32, 32)).shape == (2, 1, 7, 7)
    norms = [type(m).__name__ for m in critic.model]
    assert norms[1] == "LeakyReLU" and norms.count("InstanceNorm") == 3  # not after the first conv


def test_gradient_penalty_of_a_linear_critic_is_known():
    # D(z) = Σ w·z: its gradient w.r.t. the image is the image part of w, so GP = (‖w_img‖ − 1)²
    torch.manual_seed(0)
    w = torch.randn(1, 5, 4, 4)

    def linear_critic(z):
        return (z * w).sum(dim=(1, 2, 3), keepdim=True)

    cond, real, fake = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    loss, stats = critic_loss(linear_critic, cond, real, fake, gp_weight=10.0)
    expected_gp = (w[:, 2:].norm() - 1) ** 2
    d_real = linear_critic(torch.cat([cond, real], 1)).mean()
    d_fake = linear_critic(torch.cat([cond, fake], 1)).mean()
    assert stats["gp"] == pytest.approx(float(expected_gp), rel=1e-5)
    assert float(loss) == pytest.approx(float(d_fake - d_real + 10 * expected_gp), rel=1e-5)


def test_vgg19_layers_use_torchvision_names_and_load_from_a_given_file(tmp_path):
    net = VGG19Conv33()
    names = sorted(net.features.state_dict())
    assert names == sorted(f"{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias"))
    assert isinstance(net.features[14], torch.nn.Conv2d)  # conv3_3, no ReLU after it
    torch.manual_seed(1)
    state = {f"features.{k}": torch.randn_like(v) for k, v in net.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has more than the features
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loaded = load_vgg19_conv33(path)
    assert torch.equal(loaded.features[14].weight, state["features.14.weight"])
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    manual = F.conv2d(((x + 1) / 2 - loaded.mean) / loaded.std, state["features.0.weight"], state["features.0.bias"], padding=1)
    assert torch.allclose(loaded.features[0](((x + 1) / 2 - loaded.mean) / loaded.std), manual, atol=1e-6)
    loss = ContentLoss("vgg19", path)
    assert loss.describe()["perceptual"] == "vgg19" and float(loss(x, x)) == 0.0


def test_missing_vgg_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RefocusError, match=r"--vgg-weights.*--perceptual"):
        ContentLoss("vgg19")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(RefocusError, match="not a VGG19 checkpoint"):
        load_vgg19_conv33(bad)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")  # torch's message was many lines, advising weights_only=False
    with pytest.raises(RefocusError, match=r"notes.pth: not a safetensors file or a PyTorch state dict .*\)$"):
        load_vgg19_conv33(text)


def test_lr_is_constant_then_decays_linearly_to_zero():
    assert [lr_factor(s, 10) for s in range(11)] == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0])


def test_configs_resolve_and_reject_bad_values():
    paper = get_config("paper", "refocus")
    assert (paper.ngf, paper.n_blocks, paper.batch_size, paper.crop, paper.critic_steps) == (64, 9, 1, 256, 5)
    assert paper.epochs == 60 and get_config("paper", "deblur").epochs == 30 and paper.perceptual == "vgg19"
    g1 = get_config("cpu", "deblur", no_sml=True).generator_config()
    assert g1.in_channels == 3 and not g1.focus_gate
    g2 = get_config("cpu", "refocus", refocus_deltas="4", single_stage=True).generator_config()
    assert g2.in_channels == 3 and g2.delta_mode == "onehot" and g2.deltas == (-9.0, -5.0, 5.0, 9.0)
    with pytest.raises(RefocusError, match="unknown config"):
        get_config("huge", "deblur")
    with pytest.raises(RefocusError, match="multiple of 4"):
        get_config("smoke", "deblur", crop=30)
    for share in ("far_background", "true_radiance_share"):
        with pytest.raises(RefocusError, match=f"{share} is a share"):
            get_config("cpu", "refocus", **{share: 1.5})
    with pytest.raises(RefocusError, match="at most 64"):
        get_config("cpu", "deblur", n_blocks=65)  # load_generator would refuse its weights
    with pytest.raises(RefocusError, match="deblur"):
        get_config("cpu", "refocus", in_focus_weight=1.0)
    with pytest.raises(RefocusError, match="≥ 0"):
        get_config("cpu", "deblur", in_focus_weight=-1.0)
    with pytest.raises(RefocusError, match="disparity"):
        get_config("cpu", "deblur", in_focus_weight=1.0, data_paths=["lightfields/"])


def test_epochs_apply_when_no_steps_are_given_even_with_a_preset_of_steps(tmp_path):
    from training.__main__ import _config_from_args, build_parser

    assert (smoke(epochs=2).steps, smoke(epochs=2).epochs) == (None, 2)
    assert smoke(epochs=2, steps=3).steps == 3  # both given: steps wins
    for preset in ("cpu", "smoke"):
        args = build_parser().parse_args(["train", "deblur", "--config", preset, "--epochs", "1", "--out", str(tmp_path)])
        cfg = _config_from_args(args)
        assert (cfg.steps, cfg.epochs) == (None, 1), preset
    result = train(smoke(epochs=1), tmp_path / "run", progress=False, **datasets(n=3))
    assert result.total_steps == result.step == 3  # one epoch of 3 items, batch 1


def test_the_radiance_g1_may_be_a_registered_name(tmp_path):
    """`--radiance g1:deblur-cpu` was refused ("no G1 weights file"), although --init-weights and evaluate --g1
    take registered names and the training data loads it by name."""
    from training.__main__ import _config_from_args, build_parser

    def config(radiance: str):
        args = build_parser().parse_args(["train", "refocus", "--config", "smoke", "--radiance", radiance,
                                          "--out", str(tmp_path)])  # fmt: skip
        return _config_from_args(args)

    assert config("g1:deblur-cpu").radiance == "g1:deblur-cpu"
    assert config("mix:deblur-cpu").radiance == "mix:deblur-cpu"
    with pytest.raises(RefocusError, match="--radiance g1:no-such-g1: .*no such file and no such registered name"):
        config("g1:no-such-g1")
    with pytest.raises(RefocusError, match="--radiance mix:refocus-cpu: .* holds a refocus generator; a deblur"):
        config("mix:refocus-cpu")


# --------------------------------------------------------------------------------------------- loop


def test_content_loss_decreases_when_overfitting_one_batch(tmp_path):
    cfg = smoke(steps=40, lr=1e-3, val_size=0, log_every=40, ckpt_every=40)
    result = train(cfg, tmp_path / "run", progress=False, **datasets(n=1))
    content = [row["loss_content"] for row in result.history]
    assert len(content) == 40
    first, last = sum(content[:5]) / 5, sum(content[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_ssim_term_matches_the_evaluation_metric_and_decreases_on_one_batch(tmp_path):
    from skimage.metrics import structural_similarity

    from training.losses import ssim_loss

    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 40, 40, generator=g)
    fake = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    expected = sum(structural_similarity(r.permute(1, 2, 0).numpy(), f.permute(1, 2, 0).numpy(), channel_axis=2,
                                         data_range=1) for r, f in zip(real, fake)) / 2  # fmt: skip
    assert float(1 - ssim_loss(fake * 2 - 1, real * 2 - 1)) == pytest.approx(expected, abs=2e-3)
    assert float(ssim_loss(real, real)) == pytest.approx(0, abs=1e-6)

    cfg = smoke(steps=40, lr=1e-3, val_size=0, log_every=40, ckpt_every=40, perceptual="none", adv_weight=0,
                ssim_weight=1.0)  # fmt: skip
    result = train(cfg, tmp_path / "run", progress=False, **datasets(n=1))
    term = [row["loss_ssim"] for row in result.history]
    assert sum(term[-5:]) / 5 < 0.8 * sum(term[:5]) / 5, term
    assert load_checkpoint(result.checkpoint)["metadata"]["ssim_weight"] == "1.0"


def test_in_focus_term_scores_only_the_pixels_in_focus_and_decreases_on_one_batch(tmp_path):
    # weight 1, no other loss: the term alone trains the generator
    cfg = smoke(steps=40, lr=1e-3, val_size=0, log_every=40, ckpt_every=40, perceptual="none", adv_weight=0,
                in_focus_weight=1.0)  # fmt: skip
    sets = datasets(n=1)
    item = sets["dataset"][0]
    assert 0 < float(item["in_focus"].mean()) < 1  # the fixed batch has pixels both in and out of focus
    trainer = train_mod.Trainer(cfg, device="cpu")
    torch.manual_seed(0)  # the same dropout masks in both forward passes
    with torch.no_grad():
        fake = trainer.generator.train()(item["input"][None])
    torch.manual_seed(0)
    stats = trainer.train_step({k: v[None] for k, v in item.items()})
    sharp = item["in_focus"].bool().expand(3, -1, -1)
    expected = float(((fake[0] - item["target"]) ** 2)[sharp].mean())
    assert stats["loss_in_focus"] == pytest.approx(expected, rel=1e-4)

    result = train(cfg, tmp_path / "run", progress=False, **sets)
    term = [row["loss_in_focus"] for row in result.history]
    assert sum(term[-5:]) / 5 < 0.7 * sum(term[:5]) / 5, term
    assert load_checkpoint(result.checkpoint)["metadata"]["in_focus_weight"] == "1.0"
    with pytest.raises(RefocusError, match="in_focus"):
        trainer.train_step({k: v[None] for k, v in item.items() if k != "in_focus"})


def test_bf16_falls_back_to_float32_where_it_is_emulated(monkeypatch, capsys):
    cfg = smoke(bf16=True)
    monkeypatch.setattr(train_mod.inference, "bf16_is_native", lambda device: False)
    trainer = train_mod.Trainer(cfg, device="cpu")
    assert not trainer.bf16 and "float32" in capsys.readouterr().err
    with trainer.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert trainer.metadata()["precision"] == "float32"
    monkeypatch.setattr(train_mod.inference, "bf16_is_native", lambda device: True)
    trainer = train_mod.Trainer(cfg, device="cpu")
    with trainer.autocast():
        assert torch.is_autocast_enabled("cpu")
    assert trainer.metadata()["precision"] == "bf16 autocast"
    assert not train_mod.Trainer(smoke(bf16=False), device="cpu").bf16


def _log(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("task", "fast"), [("deblur", False), ("refocus", True)])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, task, fast):
    # fast: the cpu config's speed-ups (bf16 autocast, channels_last) must keep resume exact too
    cfg = smoke(task, steps=6, critic_steps=2, ckpt_every=100, bf16=fast, channels_last=fast)
    full = train(cfg, tmp_path / "full", progress=False, **datasets(task))
    part = train(cfg, tmp_path / "part", progress=False, stop_after=3, **datasets(task))
    assert part.stopped_early and part.step == 3 and load_checkpoint(part.checkpoint)["step"] == 3
    rest = train(cfg, tmp_path / "part", resume=True, progress=False, **datasets(task))
    assert rest.step == 6 and not rest.stopped_early
    for key in ("loss_g", "loss_d", "loss_content", "lr"):
        assert [r[key] for r in rest.history] == pytest.approx([r[key] for r in full.history[3:]], abs=1e-6), key
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    for name, tensor in a["generator"].items():
        assert torch.allclose(tensor, b["generator"][name], atol=1e-6), name
    # the resumed log holds each step once, validation included
    assert [int(r["step"]) for r in _log(tmp_path / "part")] == list(range(1, 7))
    assert [r["val_psnr"] for r in _log(tmp_path / "part")] == [r["val_psnr"] for r in _log(tmp_path / "full")]


def test_resume_with_a_longer_schedule_or_another_lr_follows_the_new_schedule(tmp_path, capsys):
    # documented: `--resume --steps 5000` after 2000 restarts the lr and decays it over steps 2500–5000
    run = tmp_path / "run"
    train(smoke(steps=4), run, progress=False, **datasets())  # ends with lr 0
    rest = train(smoke(steps=8, lr=5e-4), run, resume=True, progress=False, **datasets())
    assert [r["lr"] for r in rest.history] == pytest.approx([5e-4 * lr_factor(s, 8) for s in range(4, 8)])
    ckpt = load_checkpoint(rest.checkpoint)
    assert ckpt["config"]["lr"] == 5e-4 and ckpt["metadata"]["lr"] == "0.0005"
    assert {g["initial_lr"] for g in ckpt["opt_g"]["param_groups"] + ckpt["opt_d"]["param_groups"]} == {5e-4}
    # nothing left to do: said so, and nothing changes; fewer steps than done: an error
    again = train(smoke(steps=8), run, resume=True, progress=False, **datasets())
    assert again.step == 8 and not again.history and "nothing to do" in capsys.readouterr().err
    with pytest.raises(RefocusError, match="already trained 8 steps.*above 8"):
        train(smoke(steps=6), run, resume=True, progress=False, **datasets())
    assert load_checkpoint(run / "last.pt")["step"] == 8


def test_starting_over_an_existing_run_needs_resume(tmp_path):
    cfg = smoke(steps=1)
    train(cfg, tmp_path / "run", progress=False, **datasets())
    with pytest.raises(RefocusError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False, **datasets())


def test_a_crash_while_checkpointing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = smoke(steps=4)
    result = train(cfg, tmp_path / "run", progress=False, stop_after=2, **datasets())
    before = load_checkpoint(result.checkpoint)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("killed mid-write")

    monkeypatch.setattr(train_mod.torch, "save", dying_save)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint({"format": 1, "step": 99}, result.checkpoint)
    after = load_checkpoint(result.checkpoint)
    assert after["step"] == before["step"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt", "log.csv"]  # no temp left


def test_sigint_saves_a_checkpoint_and_stops_at_the_step_boundary(tmp_path):
    class SignalAt(PairDataset):
        calls = 0

        def __getitem__(self, i):
            SignalAt.calls += 1
            if SignalAt.calls == 3:  # during step 3
                os.kill(os.getpid(), signal.SIGINT)
            return super().__getitem__(i)

    handler = signal.getsignal(signal.SIGINT)
    # no validation: with val_dataset=None and val_size > 0, train() would render its own validation scenes
    result = train(smoke(steps=10, ckpt_every=100, val_size=0), tmp_path / "run", progress=False,
                   dataset=SignalAt("deblur"), val_dataset=None)  # fmt: skip
    assert result.stopped_early and result.step == 3
    assert load_checkpoint(result.checkpoint)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def _training_script(tmp_path, body: str) -> Path:
    """A script that trains the smoke G1 on the in-memory pairs, run in its own process."""
    script = tmp_path / "run_training.py"
    script.write_text(FAKE_DATASET + textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        from training.configs import get_config
        from training import train as train_mod
    ''') + textwrap.dedent(body))  # fmt: skip
    return script


def _rows(log: Path) -> int:
    return len(log.read_text().splitlines()) - 1 if log.exists() else 0


def test_sigterm_to_a_training_process_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import time

    run = tmp_path / "run"
    script = _training_script(tmp_path, f'''
        cfg = get_config("smoke", "deblur", steps=100000, ckpt_every=100000, log_every=1, val_size=0)
        result = train_mod.train(cfg, {str(run)!r}, progress=False, dataset=PairDataset("deblur"))
        print("stopped at", result.step, result.stopped_early)
    ''')  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _rows(run / "log.csv") < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    step = load_checkpoint(run / "last.pt")["step"]
    assert 3 <= step < 100000 and f"stopped at {step} True" in out
    resumed = train(smoke(steps=step + 2), run, resume=True, progress=False, **datasets())
    assert resumed.step == step + 2 and not resumed.stopped_early


def test_sigkill_in_the_middle_of_writing_a_checkpoint_leaves_the_previous_one_readable(tmp_path):
    run = tmp_path / "run"
    script = _training_script(tmp_path, f'''
        import os, signal
        saves = 0
        real_save = torch.save

        def save_then_die(obj, f, *args, **kwargs):
            global saves
            saves += 1
            if saves == 2:  # the second checkpoint: half written, then the process is killed
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        train_mod.torch.save = save_then_die
        cfg = get_config("smoke", "deblur", steps=100, ckpt_every=2, val_size=0)
        train_mod.train(cfg, {str(run)!r}, progress=False, dataset=PairDataset("deblur"))
    ''')  # fmt: skip
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert any(p.name.startswith("last.pt.tmp") for p in run.iterdir())  # the torn write, left behind
    assert load_checkpoint(run / "last.pt")["step"] == 2
    resumed = train(smoke(steps=4), run, resume=True, progress=False, **datasets())
    assert resumed.step == 4
    # the resumed run's first checkpoint removes the dead writer's torn file
    assert not any(p.name.startswith("last.pt.tmp") for p in run.iterdir())


@pytest.mark.skipif(os.name == "nt", reason="PIDs are not probed on Windows")
def test_a_checkpoint_write_removes_only_the_temporaries_of_dead_writers(tmp_path):
    from training.train import save_checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        torn, in_progress = tmp_path / f"last.pt.tmp{int(dead.stdout)}", tmp_path / f"last.pt.tmp{live.pid}"
        other = tmp_path / f"best.pt.tmp{int(dead.stdout)}"  # another file's temporary: not ours to judge
        for f in (torn, in_progress, other):
            f.write_bytes(b"half a checkpoint")
        save_checkpoint({"step": 1}, tmp_path / "last.pt")
        assert not torn.exists() and in_progress.exists() and other.exists()
        assert torch.load(tmp_path / "last.pt", weights_only=True) == {"step": 1}
    finally:
        live.kill()


def test_ddp_with_two_gloo_processes(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(FAKE_DATASET + textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import torch.distributed as dist
        from training.configs import get_config
        from training.train import train

        import torch
        import training.train as train_mod

        trainers = []  # this rank's Trainer, to compare the ranks' weights afterwards
        real_init = train_mod.Trainer.__init__
        def recording_init(self, *args, **kwargs):
            real_init(self, *args, **kwargs)
            trainers.append(self)
        train_mod.Trainer.__init__ = recording_init

        cfg = get_config("smoke", "refocus", steps=3, batch_size=1, threads=1)
        result = train(cfg, {str(tmp_path / "run")!r}, progress=False, dataset=PairDataset("refocus", n=4, channels=6),
                       val_dataset=PairDataset("refocus", n=2, channels=6))
        torch.save(trainers[0].generator.state_dict(), {str(tmp_path)!r} + f"/weights{{dist.get_rank()}}.pt")
        with open({str(tmp_path)!r} + f"/rank{{dist.get_rank()}}.txt", "w") as f:
            f.write(f"{{dist.get_world_size()}} {{result.step}}")
        dist.destroy_process_group()
    '''))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["2 3", "2 3"]
    # each rank saw different items, yet gradient averaging kept the weights identical, and they moved
    w0, w1 = (torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ckpt_weights = load_checkpoint(tmp_path / "run" / "last.pt")["generator"]
    assert all(torch.equal(w0[k], ckpt_weights[k]) for k in w0)
    assert not torch.equal(w0["tail.1.weight"], torch.zeros_like(w0["tail.1.weight"]))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3 and len(ckpt["rng"]) == 2
    # the model card counts the effective batch: one item per process
    assert ckpt["metadata"]["batch_size"] == "2"


# ------------------------------------------------------------------------------------- export / CLI


def test_export_then_plugin_load_gives_identical_outputs(tmp_path):
    from napari_refocusgan.core.weights import list_models, load_generator
    from training.export import export_checkpoint
    from training.train import generator_from_checkpoint

    result = train(smoke("refocus", steps=2), tmp_path / "run", progress=False, **datasets("refocus"))
    registry = tmp_path / "registry.json"
    out = export_checkpoint(result.checkpoint, tmp_path / "g2.safetensors", name="smoke-g2", registry=True,
                            registry_path=registry)  # fmt: skip
    loaded = load_generator(out, role="refocus")
    original = generator_from_checkpoint(load_checkpoint(result.checkpoint))
    x = torch.rand(1, 6, 32, 32) * 2 - 1
    with torch.no_grad():
        for delta in (-9.0, 3.0, 8.5):
            d = torch.tensor([delta])
            assert torch.equal(loaded.generator(x, d), original(x, d))
    assert loaded.metadata["perceptual"] == "l1" and loaded.metadata["steps"] == "2"
    assert float(loaded.metadata["train_time_s"]) >= 0  # the model card says how long it trained
    (entry,) = list_models(registry)
    assert (entry.name, entry.role, entry.default) == ("smoke-g2", "refocus", True)
    assert entry.training["train_config"] == "smoke" and entry.path == out.resolve()


def test_init_weights_fine_tunes_from_an_export_and_new_heads_start_as_identity(tmp_path):
    """--init-weights: the file's tensors are copied in; a head it lacks (G2's blur gains, added since the
    file was trained) starts at zero, so the first output equals the file's; a file of another size fails."""
    import dataclasses

    from napari_refocusgan.core.networks import Generator
    from napari_refocusgan.core.weights import file_sha256, save_generator
    from training.train import Trainer, generator_from_checkpoint

    cfg = smoke("refocus", steps=1)
    old_cfg = dataclasses.replace(cfg.generator_config(), detail_sigmas=())  # as G2s were saved before
    torch.manual_seed(5)
    old = Generator(old_cfg)
    for p in old.parameters():  # trained-looking weights: the zero-initialised heads too
        torch.nn.init.normal_(p, 0, 0.05)
    path = tmp_path / "old.safetensors"
    save_generator(old.eval(), path, "refocus")

    result = train(dataclasses.replace(cfg, init_weights=str(path)), tmp_path / "run", progress=False,
                   **datasets("refocus"))  # fmt: skip
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["metadata"]["init_weights"] == f"old.safetensors (sha256 {file_sha256(path)})"
    trainer = Trainer(dataclasses.replace(cfg, init_weights=str(path)))
    trainer.init_generator(str(path))
    new = trainer.generator.eval()
    assert not new.detail[1].weight.any() and not new.detail[1].bias.any()
    x = torch.rand(1, 6, 32, 32) * 0.6 - 0.3
    with torch.no_grad():
        torch.testing.assert_close(new(x, torch.tensor([4.0])), old(x, torch.tensor([4.0])))
    assert generator_from_checkpoint(ckpt).detail[1].weight.shape == new.detail[1].weight.shape

    bigger = Trainer(smoke("refocus", steps=1, ngf=8))
    with pytest.raises(RefocusError, match="do not fit this network"):
        bigger.init_generator(str(path))


def test_cli_export_of_a_deblur_run(tmp_path, capsys):
    from napari_refocusgan.core.weights import load_generator

    train(smoke(steps=1), tmp_path / "run", progress=False, **datasets())
    out = tmp_path / "g1.safetensors"
    assert cli_main(["export", str(tmp_path / "run"), "-o", str(out)]) == 0
    model = load_generator(out, role="deblur")
    assert model.config.in_channels == 4 and model.metadata["sml_channel"] == "true"
    assert cli_main(["export", str(tmp_path / "nothing.pt"), "-o", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "run"), "-o", str(out), "--metric", "psnr=1"]) == 2
    assert "add --registry" in capsys.readouterr().err


def test_cli_export_records_metrics_in_the_registry_entry(tmp_path, monkeypatch, capsys):
    from napari_refocusgan.core import weights

    registry = tmp_path / "registry.json"
    monkeypatch.setattr(weights, "REGISTRY_PATH", registry)  # not the shipped registry
    train(smoke(steps=1), tmp_path / "run", progress=False, **datasets())
    out = tmp_path / "g1.safetensors"
    args = ["export", str(tmp_path / "run"), "-o", str(out), "--name", "g1-m", "--registry",
            "--metric", "psnr_gain_db_synthetic=0.43", "--metric", "ssim_synthetic=0.868"]  # fmt: skip
    assert cli_main(args) == 0
    (entry,) = weights.list_models(registry)
    assert entry.metrics == {"psnr_gain_db_synthetic": 0.43, "ssim_synthetic": 0.868}
    for bad in ("psnr", "psnr=nan", "=1"):  # NaN would not be valid JSON in the registry
        with pytest.raises(SystemExit):
            cli_main(["export", str(tmp_path / "run"), "-o", str(out), "--registry", "--metric", bad])
        assert "NAME=NUMBER" in capsys.readouterr().err


def test_cli_export_refuses_what_would_break_the_registry(tmp_path, monkeypatch, capsys):
    from napari_refocusgan.core import weights

    registry = tmp_path / "weights" / "registry.json"
    registry.parent.mkdir()
    monkeypatch.setattr(weights, "REGISTRY_PATH", registry)  # not the shipped registry
    train(smoke(steps=1), tmp_path / "run", progress=False, **datasets())
    train(smoke("refocus", steps=1), tmp_path / "g2run", progress=False, **datasets("refocus"))
    g1, g2 = registry.parent / "g1.safetensors", registry.parent / "g2.safetensors"
    run = str(tmp_path / "run")
    assert cli_main(["export", run, "-o", str(g1), "--name", "g1", "--registry"]) == 0
    assert cli_main(["export", str(tmp_path / "g2run"), "-o", str(g2), "--name", "g2", "--registry"]) == 0
    before = g1.read_bytes(), registry.read_text()
    for args, message in (
        (["-o", str(g1)], "registered weights 'g1'"),  # overwriting a hashed file without updating its entry
        (["-o", str(g1), "--name", "other", "--registry"], "two entries cannot share one file"),
        (["-o", str(tmp_path / "x.safetensors"), "--name", "g2", "--registry"], "registered as refocus"),
        (["-o", str(tmp_path / "x.safetensors"), "--name", "deblur", "--registry"], "is a role"),
        (["-o", str(tmp_path)], "names a folder"),
        (["-o", str(tmp_path / "newdir") + "/"], "names a folder"),  # not a file called newdir
        # the run's own checkpoint and log, the registry, any other file: weights are .safetensors only
        (["-o", str(tmp_path / "run" / "last.pt")], "written as .safetensors"),
        (["-o", str(tmp_path / "run" / "log.csv")], "written as .safetensors"),
        (["-o", str(registry)], "written as .safetensors"),
        (["-o", "/proc/g1.safetensors"], "cannot write into /proc"),  # found after loading the checkpoint before
    ):
        assert cli_main(["export", run, *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert (g1.read_bytes(), registry.read_text()) == before and not (tmp_path / "x.safetensors").exists()
    assert not (tmp_path / "newdir").exists()
    assert cli_main(["export", run, "-o", str(tmp_path / "run" / "w.safetensors")]) == 0  # the run still reads
    # replacing an entry's file under its own name stays possible, and its hash follows
    assert cli_main(["export", run, "-o", str(g1), "--name", "g1", "--registry"]) == 0
    assert {e.name: e.sha256 for e in weights.list_models(registry)}["g1"] == weights.file_sha256(g1)


@pytest.mark.parametrize(("flag", "value"), [("--threads", "-1"), ("--ngf", "0"), ("--ndf", "0"), ("--lr", "nan"),
                                             ("--seed", "-1"), ("--adv-weight", "nan"), ("--n-blocks", "-1")])
def test_cli_refuses_bad_numbers_before_any_work(tmp_path, capsys, flag, value):
    out = tmp_path / "o"
    code = cli_main(["train", "deblur", "--config", "smoke", "--out", str(out), "--no-progress", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err, err
    assert flag in err or flag[2:].replace("-", "_") in err, err
    assert "Traceback" not in err and not out.exists() and not (tmp_path / "runs").exists()


def test_cli_checks_folders_and_weight_files_before_rendering_anything(tmp_path, capsys):
    afile, bad = tmp_path / "afile", tmp_path / "bad.safetensors"
    afile.write_text("x")
    bad.write_text("not weights")
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["train", "deblur", "--config", "smoke", "--no-progress"]
    cases = [
        (["--out", str(afile / "run"), "--cache-dir", str(cache)], "is a file"),
        (["--out", str(out), "--cache-dir", str(afile)], "--cache-dir"),
        (["--out", str(out), "--cache-dir", str(cache), "--init-weights", str(bad)], "not a safetensors file"),
        (["--out", str(out), "--cache-dir", str(cache), "--perceptual", "vgg19", "--vgg-weights", str(bad)], "VGG"),
    ]
    if Path("/proc/self").is_dir():  # writes refused whatever the permission bits say (also for root)
        cases.append((["--out", "/proc/no_such_run", "--cache-dir", str(cache)], "cannot write"))
    for args, message in cases:
        code = cli_main([*common, *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert not out.exists() and not cache.exists(), args  # no empty run folder, no scenes rendered
    assert afile.read_text() == "x"


def test_export_over_a_writable_file_in_a_folder_that_takes_no_new_file_is_refused_first(tmp_path, capsys,
                                                                                         monkeypatch):
    """The weights are written beside the file and renamed: a writable file was enough for the check, and the
    export failed after reading the checkpoint."""
    import tempfile

    from napari_refocusgan.core import imaging

    train(smoke(steps=1), tmp_path / "run", progress=False, **datasets())
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "g1.safetensors").write_bytes(b"old")
    real = tempfile.TemporaryFile

    def no_new_files_there(*args, dir=None, **kwargs):  # as a read-only folder would (root may write anyway)
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(imaging.tempfile, "TemporaryFile", no_new_files_there)
    assert cli_main(["export", str(tmp_path / "run"), "-o", str(folder / "g1.safetensors")]) == 2
    assert "cannot write into" in capsys.readouterr().err
    assert (folder / "g1.safetensors").read_bytes() == b"old"


def test_a_run_log_that_is_not_one_is_a_message_on_resume_and_export_goes_on(tmp_path, capsys):
    """An overwritten log.csv crashed --resume and export with a UnicodeDecodeError traceback."""
    run = tmp_path / "run"
    train(smoke(steps=2), run, progress=False, stop_after=1, **datasets())
    log = (run / "log.csv").read_text()
    (run / "log.csv").write_text(log.splitlines()[0] + "\n1,0,0.5\n1\n")  # the last row cut short
    with pytest.raises(RefocusError, match="log.csv is not a readable training log"):
        train(smoke(steps=2), run, resume=True, progress=False, **datasets())
    (run / "log.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RefocusError, match="log.csv is not a readable training log"):
        train(smoke(steps=2), run, resume=True, progress=False, **datasets())
    assert cli_main(["export", str(run), "-o", str(tmp_path / "w.safetensors")]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_checkpoint_errors_say_what_is_wrong(tmp_path, capsys):
    whole = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(1, 1)}, whole)  # pickled objects: never loaded
    partial = tmp_path / "partial.pt"
    torch.save({"format": 1, "step": 3}, partial)
    out = str(tmp_path / "w.safetensors")
    for path, message in ((whole, "not a training checkpoint of this package"),
                          (partial, "lacks epoch, batch_in_epoch, total_steps")):  # fmt: skip
        assert cli_main(["export", str(path), "-o", out]) == 2
        err = capsys.readouterr().err
        assert message in err and "weights_only" not in err and "Traceback" not in err, err
    run = tmp_path / "run"
    train(smoke(steps=2), run, progress=False, stop_after=1, **datasets())
    with pytest.raises(RefocusError, match=r"ngf 4 in the run, 8 now; n_blocks 1 in the run, 2 now"):
        train(smoke(steps=2, ngf=8, n_blocks=2), run, resume=True, progress=False, **datasets())


@pytest.mark.parametrize(("task", "args"), [("deblur", ["--radiance", "true"]), ("deblur", ["--refocus-deltas", "8"]),
                                           ("deblur", ["--single-stage"]), ("refocus", ["--no-sml"])])
def test_cli_refuses_options_the_task_would_ignore(tmp_path, capsys, task, args):
    code = cli_main(["train", task, "--config", "smoke", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and f"{args[0]} applies to" in err and not (tmp_path / "o").exists(), err


@pytest.mark.parametrize("args", [["--radiance", "true"], ["--true-radiance-share", "0.5"]])
def test_cli_refuses_radiance_options_for_a_single_stage_g2(tmp_path, capsys, args):
    """They were recorded in the model card of a G2 that has no radiance input."""
    code = cli_main(["train", "refocus", "--config", "smoke", "--single-stage", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and "no use with --single-stage" in err and not (tmp_path / "o").exists(), err
    run = tmp_path / "single"  # nor when resuming a single-stage run
    data = PairDataset("refocus", n=4, channels=3)
    train(smoke("refocus", steps=2, single_stage=True), run, progress=False, stop_after=1, dataset=data, val_dataset=data)
    code = cli_main(["train", "refocus", "--resume", "--out", str(run), "--no-progress", *args])
    assert code == 2 and "no use with --single-stage" in capsys.readouterr().err


def test_cli_resume_refuses_another_config_instead_of_ignoring_it(tmp_path, capsys):
    run = tmp_path / "run"
    train(smoke(steps=2), run, progress=False, stop_after=1, **datasets())
    before = (run / "last.pt").read_bytes()
    code = cli_main(["train", "deblur", "--config", "paper", "--resume", "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "was made with 'smoke'" in err, err
    assert (run / "last.pt").read_bytes() == before


def test_cli_reports_a_missing_or_empty_data_path_without_traceback(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for data, message in ((tmp_path / "missing", "does not exist"), (empty, "empty")):
        code = cli_main(["train", "deblur", "--config", "smoke", "--data", str(data), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2
        assert "error:" in err and message in err and str(data) in err and "Traceback" not in err
    assert not (tmp_path / "o" / "last.pt").exists()


def test_cli_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    code = cli_main(["train", "deblur", "--config", "smoke", "--out", str(tmp_path / "none"), "--resume"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["deblur", "refocus"])
def test_resume_is_exact_with_the_real_data_pipeline(tmp_path, task):
    # the synthetic-scene dataset keeps its own sampling state; the checkpoint must carry it
    pytest.importorskip("training.data")
    extra = {}
    if task == "refocus":  # a G2 on a mixed radiance: the dataset loads G1 lazily, on its first G1 item
        extra["radiance"] = f"mix:{_tiny_g1(tmp_path / 'g1.safetensors')}"
    cfg = smoke(task, steps=4, train_scenes=1, val_scenes=1, val_every=4, ckpt_every=100,
                cache_dir=str(tmp_path / "cache"), cache_workers=1, **extra)  # fmt: skip
    full = train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "part", progress=False, stop_after=2)
    rest = train(cfg, tmp_path / "part", resume=True, progress=False)
    assert [r["loss_g"] for r in rest.history] == pytest.approx([r["loss_g"] for r in full.history[2:]], abs=1e-6)


def _tiny_g1(path: Path) -> Path:
    """An untrained smoke-sized G1 (the identity) exported to ``path``."""
    from napari_refocusgan.core.networks import Generator, deblur_config
    from napari_refocusgan.core.weights import save_generator

    torch.manual_seed(0)
    save_generator(Generator(deblur_config(ngf=4, n_blocks=1)), path, "deblur", {"steps": 0})
    return path


def test_a_mixed_radiance_g2_is_also_validated_on_each_radiance(tmp_path):
    # the mixed validation set draws the radiance per item; the log also scores its items with each radiance
    pytest.importorskip("training.data")
    from napari_refocusgan.core.networks import Generator, deblur_config
    from napari_refocusgan.core.weights import file_sha256, save_generator

    g1 = _tiny_g1(tmp_path / "g1.safetensors")
    common = dict(steps=2, train_scenes=1, val_scenes=1, val_size=4, val_every=2, cache_dir=str(tmp_path / "cache"),
                  cache_workers=1)  # fmt: skip
    cfg = smoke("refocus", radiance=f"mix:{g1}", **common)
    sets = train_mod._radiance_val_datasets(cfg)
    assert sorted(sets) == ["g1", "true"]
    for index in range(len(sets["true"])):
        true_item, g1_item = sets["true"][index], sets["g1"][index]
        assert torch.equal(true_item["input"][:3], g1_item["input"][:3])
        assert torch.equal(true_item["target"], g1_item["target"])
        # the untrained G1 returns its input; the true radiance is the centre view, which is not the input
        assert torch.allclose(g1_item["input"][3:], g1_item["input"][:3], atol=2e-2)
        assert not torch.allclose(true_item["input"][3:], true_item["input"][:3], atol=2e-2)
    result = train(cfg, tmp_path / "mix", progress=False)
    # the model card names the radiance's G1 by content, not only by a path whose file may change
    assert load_checkpoint(result.checkpoint)["metadata"]["radiance_g1_sha256"] == file_sha256(g1)
    # resuming after the radiance's G1 file changed would mix two G1s under one card
    torch.manual_seed(1)
    save_generator(Generator(deblur_config(ngf=4, n_blocks=1)), g1, "deblur", {"steps": 1})
    with pytest.raises(RefocusError, match="changed since this run began"):
        train(replace(cfg, steps=4), tmp_path / "mix", resume=True, progress=False)
    last = _log(tmp_path / "mix")[-1]
    for column in ("val_psnr", "val_psnr_true", "val_ssim_true", "val_psnr_g1", "val_ssim_g1"):
        assert 0 < float(last[column]) < 100, column
    # a run on one radiance has nothing to split
    assert train_mod._radiance_val_datasets(smoke("refocus", radiance="true", **common)) == {}
    result = train(smoke("refocus", radiance="true", **common), tmp_path / "true", progress=False)
    assert "radiance_g1_sha256" not in load_checkpoint(result.checkpoint)["metadata"]
    last = _log(tmp_path / "true")[-1]
    assert last["val_psnr"] and last["val_psnr_true"] == last["val_psnr_g1"] == ""


def test_cli_hands_evaluate_its_own_arguments(capsys):
    pytest.importorskip("training.evaluate")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    assert "python -m training evaluate" in capsys.readouterr().out


def test_cli_trains_then_resumes_with_more_steps(tmp_path):
    pytest.importorskip("training.data")
    from training.data import synthetic_key
    run, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--config", "smoke", "--out", str(run), "--cache-dir", str(cache), "--train-scenes", "1", "--no-progress"]
    assert cli_main(["train", "deblur", *common, "--steps", "2", "--far-background", "1"]) == 0
    first = load_checkpoint(run / "last.pt")
    assert first["step"] == 2
    # --far-background reaches the data (the training scene is the far variant) and the model card
    size = first["config"]["scene_size"]
    assert (cache / synthetic_key(0, size, far_background=True) / "stack.npy").exists()
    assert not (cache / synthetic_key(0, size)).exists()
    assert first["config"]["far_background"] == 1.0 and first["metadata"]["far_background"] == "1.0"
    assert cli_main(["train", "deblur", *common, "--steps", "3", "--resume"]) == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["step"], ckpt["total_steps"], ckpt["config"]["train_scenes"]) == (3, 3, 1)
    assert [int(r["step"]) for r in _log(run)] == [1, 2, 3]
