import json

import numpy as np
import pytest

from speckle2self.errors import Cancelled, UserError
from speckle2self.inference import despeckle
from speckle2self.training import TrainConfig, switch_head, train, train_job
from speckle2self.weights import card_path, load_checkpoint


def test_a_few_steps_lower_the_loss_on_real_frames(sample_array):
    config = TrainConfig(steps=24, size=64, batch=4, width=8, augment=False)
    history = train([sample_array], config).history
    first = np.mean([h[2] for h in history[:4]])
    last = np.mean([h[2] for h in history[-4:]])
    assert last < 0.7 * first


def test_checkpoint_card_and_fine_tuning_accumulate(tmp_path, sample_array):
    out = tmp_path / "model.pt"
    first = train([sample_array], TrainConfig(steps=2, size=32, batch=2, width=8), out=out)
    card = json.loads(card_path(out).read_text())
    assert card["cumulative_steps"] == 2 and card["sha256"] == first.card["sha256"]
    assert card["config"]["width"] == 8 and "code_version" in card and "machine" in card
    tuned = tmp_path / "tuned.pt"
    train([sample_array], TrainConfig(steps=3, size=32, batch=2, width=8), init=out, out=tuned)
    model, tuned_card = load_checkpoint(tuned)
    assert tuned_card["cumulative_steps"] == 5 and tuned_card["init_sha256"] == card["sha256"]
    assert card["cumulative_pixels"] == 2 * 2 * 32 ** 2 and tuned_card["cumulative_pixels"] == 5 * 2 * 32 ** 2
    image = sample_array[:64, :64]
    assert despeckle(image, model=model).shape == image.shape


def test_switching_to_the_linear_head_keeps_the_weights_and_fits_the_brightness(tmp_path, tiny_weights):
    import torch

    model, _ = load_checkpoint(tiny_weights)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(0.5, 0.9, (4, 1, 32, 32)).astype(np.float32))
    linear = switch_head(model, "linear", images)
    assert linear.head == "linear" and model.head == "faithful"
    before, after = model.state_dict(), linear.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith(f"decoder.{len(model.decoder) - 1}."))
    with torch.no_grad():
        out = linear([images] * 3)[-1]
    assert abs(float(out.mean()) - float(images.mean())) < 0.01  # the faithful head's mean cannot follow
    tuned = train([images[:, 0].numpy()], TrainConfig(steps=1, size=32, batch=2, head="linear"), init=tiny_weights,
                  out=tmp_path / "linear.pt")
    reloaded, card = load_checkpoint(tmp_path / "linear.pt")
    assert tuned.model.head == reloaded.head == card["head"] == card["config"]["head"] == "linear"
    kept = train([images[:, 0].numpy()], TrainConfig(steps=1, size=32, batch=2), init=tmp_path / "linear.pt")
    assert kept.model.head == "linear"


def test_cancel_writes_nothing(tmp_path, sample_array):
    out = tmp_path / "model.pt"
    job = train_job([sample_array], TrainConfig(steps=50, size=32, batch=2, width=8), out=out)
    assert job.step() and job.step()
    job.cancel()
    with pytest.raises(Cancelled):
        job.run()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("config", [TrainConfig(), TrainConfig(steps=1, minutes=1), TrainConfig(steps=0),
                                    TrainConfig(steps=1, size=40), TrainConfig(steps=1, batch=0),
                                    TrainConfig(steps=1, head="sigmoid"), TrainConfig(steps=1, lr=0)])
def test_bad_configs_are_refused(sample_array, config):
    with pytest.raises(UserError):
        train_job([sample_array], config)


def test_bad_training_data_is_refused():
    with pytest.raises(UserError):
        train_job([], TrainConfig(steps=1))
    with pytest.raises(UserError):
        train_job([np.zeros((4, 4))], TrainConfig(steps=1))
