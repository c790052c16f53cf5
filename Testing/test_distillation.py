"""Distillation: a narrower student learns to reproduce a teacher on unlabelled frames."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from speckle2self.cli import main
from speckle2self.distillation import DistilConfig, distil_job
from speckle2self.errors import UserError
from speckle2self.network import Speckle2SelfNet
from speckle2self.weights import load_checkpoint, sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _teacher() -> Speckle2SelfNet:
    torch.manual_seed(3)
    return Speckle2SelfNet(width=8, head="linear").eval()


def _gap(student: Speckle2SelfNet, teacher: Speckle2SelfNet, frame: torch.Tensor) -> float:
    """Mean squared difference of the full-scale branches (the despeckling path, before its clamp) on `frame`."""
    with torch.no_grad():
        return float(((student.decoder(student.encoders[-1](frame)) -
                       teacher.decoder(teacher.encoders[-1](frame))) ** 2).mean())


def test_the_student_learns_to_reproduce_the_teacher_on_every_branch(sample_array):
    teacher = _teacher()
    frames = [sample_array[:200, :300], sample_array[200:, 300:]]
    config = DistilConfig(minutes=None, steps=80, width=4, size=64, batch=4, lr=1e-2)
    torch.manual_seed(config.seed)
    untrained = Speckle2SelfNet(config.width, "linear")
    student, card = distil_job(frames[:1], teacher, config, device="cpu").run()
    held_out = torch.from_numpy((frames[1][:64, :64] / 255.0).astype(np.float32))[None, None]
    assert _gap(student, teacher, held_out) < 0.6 * _gap(untrained, teacher, held_out)  # measured: 0.46
    assert (student.width, student.head, card["steps"]) == (4, "linear", 80)
    for trained, start in zip(student.encoders, untrained.encoders):  # the alternate branches learn too
        assert not torch.equal(trained[0].conv.weight, start[0].conv.weight)


def test_cli_distils_the_given_teacher_into_a_checkpoint_with_its_card(tmp_path, capsys):
    teacher = tmp_path / "teacher.pt"
    from speckle2self.weights import save_checkpoint

    save_checkpoint(_teacher(), teacher, {"speckle_grain": 4.5})
    out = tmp_path / "student.pt"
    assert main(["distil", str(SAMPLE), "--teacher", str(teacher), "--out", str(out), "--steps", "3",
                 "--width", "4", "--size", "32", "--batch", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    student, card = load_checkpoint(out)
    assert student.width == 4 and card["teacher_sha256"] == sha256(teacher)
    assert card["speckle_grain"] == 4.5  # copied at the teacher's grain, despeckles at it
    assert card["command"].startswith("speckle2self distil") and card["distillation"]["steps"] == 3


def test_a_missing_output_folder_is_refused_before_any_step(tmp_path, capsys):
    from speckle2self.training import TrainConfig, train_job

    missing = tmp_path / "no" / "student.pt"
    with pytest.raises(UserError, match="does not exist"):
        distil_job([np.zeros((64, 64), np.float32)], _teacher(), DistilConfig(minutes=None, steps=1), out=missing)
    with pytest.raises(UserError, match="does not exist"):
        train_job([np.zeros((64, 64), np.float32)], TrainConfig(steps=1), out=missing)
    assert main(["distil", str(SAMPLE), "--out", str(tmp_path / "s.pt"), "--steps", "0"]) == 2
    assert "positive" in capsys.readouterr().err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("config", [DistilConfig(minutes=None), DistilConfig(minutes=0), DistilConfig(width=0),
                                    DistilConfig(size=40), DistilConfig(lr=2.0)])
def test_bad_distillation_settings_are_refused_before_any_work(config):
    with pytest.raises(UserError):
        distil_job([np.zeros((64, 64), np.float32)], _teacher(), config)


def test_a_student_goes_on_from_its_checkpoint_and_its_counts_add_up(tmp_path):
    from speckle2self.weights import save_checkpoint

    teacher, other = tmp_path / "teacher.pt", tmp_path / "other.pt"
    save_checkpoint(_teacher(), teacher, {})
    torch.manual_seed(4)
    save_checkpoint(Speckle2SelfNet(width=8, head="linear"), other, {})
    frames = [np.random.default_rng(0).random((64, 64), np.float32)]
    config = DistilConfig(minutes=None, steps=3, width=4, size=32, batch=2)
    first = tmp_path / "first.pt"
    distil_job(frames, teacher, config, device="cpu", out=first).run()
    start, _ = load_checkpoint(first)
    student, card = distil_job(frames, teacher, DistilConfig(minutes=None, steps=2, width=4, size=32, batch=2),
                               device="cpu", init=first).run()
    assert (card["steps"], card["cumulative_steps"], card["init_sha256"]) == (2, 5, sha256(first))
    assert not torch.equal(student.encoders[-1][0].conv.weight, start.encoders[-1][0].conv.weight)
    with pytest.raises(UserError, match="another teacher"):
        distil_job(frames, other, config, init=first)
    with pytest.raises(UserError, match="width 4"):
        distil_job(frames, teacher, DistilConfig(minutes=None, steps=1, width=8), init=first)
