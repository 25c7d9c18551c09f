"""bench/resnet18.py: the estimate's arithmetic, the data, and a tiny run on the CPU."""

import pytest
import torch

import submission
from bench import resnet18


def test_estimate_scales_by_epochs_and_images():
    # 2 s for 1 epoch on 405 images -> 30 epochs on 40,500 images: 2 * 30 * 100
    assert resnet18.estimate_full_seconds(2.0, epochs=1, images=405, full_epochs=30) == 6000.0
    assert (
        resnet18.estimate_full_seconds(90.0, epochs=30, images=resnet18.FULL_IMAGES, full_epochs=30)
        == 90.0
    )
    with pytest.raises(ValueError, match="epochs >= 1"):
        resnet18.estimate_full_seconds(1.0, epochs=0, images=10, full_epochs=30)


def test_projected_hours_count_every_training_and_run_of_an_evaluation():
    # N = 512: 1,537 trainings of 60 s and 512 runs of 9 s
    assert resnet18.projected_hours(60.0, 9.0) == pytest.approx((1537 * 60 + 512 * 9) / 3600)
    assert resnet18.projected_hours(1.0, 1.0, n_models=2) == pytest.approx(9 / 3600)


def test_synthetic_images_have_cifar_shape_and_repeat_by_seed():
    a = resnet18.synthetic_split(20, seed=3)
    b = resnet18.synthetic_split(20, seed=3)
    assert a.images.shape == (20, 3, 32, 32) and a.labels.dtype == torch.int64
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, resnet18.synthetic_split(20, seed=4).images)
    assert 0 <= int(a.labels.min()) and int(a.labels.max()) <= 9


def test_tiny_cpu_run_reports_an_estimate_from_the_measured_seconds():
    res = resnet18.run(device="cpu", images=16, epochs=1, models=1)
    assert res["full_size"] is False and res["workers"] == 1
    (seconds,) = res["model_seconds"]
    assert seconds > 0
    scale = 30 * resnet18.FULL_IMAGES / 16
    assert res["retraining_s"] == pytest.approx(seconds * scale)
    assert res["training_wall_s"] >= seconds and res["wall_s"] > res["training_wall_s"]
    assert res["models_per_min"] == pytest.approx(60 / (res["training_wall_s"] * scale))
    assert res["peak_kind"] == "RSS while training" and res["peak_mb"] > 0
    # one unlearning run, scaled by images only (the method's epochs are its own)
    assert res["unlearning_method"] == submission.DEFAULT_METHOD and res["unlearning_s"] > 0
    lines = resnet18.report_lines(res)
    assert "estimated from 1 epoch(s) on 16 images" in lines[3]
    assert f"({submission.DEFAULT_METHOD}, estimated from 16 images)" in lines[4]
    hours = resnet18.projected_hours(res["retraining_s"], res["unlearning_s"])
    assert f"{hours:.1f} h" in lines[5]
    assert res["device"].startswith("CPU")


@pytest.mark.slow
def test_workers_split_the_models_and_give_no_alone_figure():
    res = resnet18.run(device="cpu", images=8, epochs=1, models=3, workers=2)
    assert res["workers"] == 2 and len(res["model_seconds"]) == 3
    assert res["retraining_s"] is None and res["unlearning_s"] is None
    assert "not measured with concurrent workers" in resnet18.report_lines(res)[3]


def test_bad_sizes_are_refused_with_the_values(capsys):
    with pytest.raises(ValueError, match="must be >= 1; got 0"):
        resnet18.run(device="cpu", images=0)
    with pytest.raises(SystemExit) as exit_info:
        resnet18.main(["--device", "cpu", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_cuda_asked_for_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resnet18.run(device="cuda")
