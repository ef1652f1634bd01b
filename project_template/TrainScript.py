"""Training in the original BenchKit style: ``get_dataset``, ``get_accelerator``, the tracker,
``upload_model_checkpoint`` and ``wipe_temp``.

    python manage.py migrate-data               # chunk, test and upload the datasets first
    python -m benchkit run TrainScript.py       # or: python TrainScript.py
    python -m benchkit run TrainScript.py --processes 2

Logged values go to the run shown by ``benchkit runs list``; checkpoints to
``benchkit checkpoints list`` (the original's ``bench-kit show-check``).
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from Datasets.ProjectDatasets import CatDogChunk
from Models.ProjectModels import CatDogNet
from torch import nn
from torch.utils.data import DataLoader

from benchkit import (
    BenchAccelerateTracker,
    get_accelerator,
    get_dataset,
    upload_model_checkpoint,
    wipe_temp,
)

tracker_config = {"epochs": 3, "bs": 32, "lr": 3e-3, "workers": 2}


def train_one_epoch(accelerate: Accelerator, train_dl: DataLoader, model, optim, loss_fn) -> float:
    """One pass over the training data; returns the mean loss over every process."""
    model.train()
    total_loss = torch.zeros((), device=accelerate.device)
    count = 0
    for inputs, targets in train_dl:
        inputs, targets = inputs.to(accelerate.device), targets.to(accelerate.device)
        optim.zero_grad()
        loss = loss_fn(model(inputs), targets)
        accelerate.backward(loss)
        optim.step()
        all_loss = accelerate.gather(loss.detach().reshape(1))
        total_loss += all_loss.sum()
        count += all_loss.numel()
    wipe_temp(accelerate)
    return total_loss.item() / max(count, 1)


def validate_one_epoch(accelerate: Accelerator, val_dl: DataLoader, model) -> float:
    """Accuracy on the validation data, over every process."""
    model.eval()
    counts = torch.zeros(2, device=accelerate.device)  # correct, total
    with torch.no_grad():
        for inputs, targets in val_dl:
            inputs, targets = inputs.to(accelerate.device), targets.to(accelerate.device)
            correct = (model(inputs).argmax(1) == targets).sum()
            counts += torch.stack([correct, torch.tensor(targets.numel(), device=accelerate.device)])
    correct, total = accelerate.reduce(counts, "sum").tolist()
    wipe_temp(accelerate)
    return correct / max(total, 1)


def main() -> None:
    train_dataset: DataLoader = get_dataset(
        CatDogChunk, True, "train", tracker_config["bs"], tracker_config["workers"], True, shuffle=True
    )
    val_dataset: DataLoader = get_dataset(
        CatDogChunk, True, "val", tracker_config["bs"], tracker_config["workers"], False
    )

    model = CatDogNet()
    loss_fn = nn.CrossEntropyLoss()
    optim = torch.optim.AdamW(params=model.parameters(), lr=tracker_config["lr"])

    tracker = BenchAccelerateTracker("trial run", tracker_config["epochs"])
    acc: Accelerator = get_accelerator(log_with=tracker)
    acc.init_trackers("catdog", config=tracker_config)
    model, loss_fn, optim, train_dataset, val_dataset = acc.prepare(
        model, loss_fn, optim, train_dataset, val_dataset
    )

    for epoch in range(tracker_config["epochs"]):
        loss = train_one_epoch(acc, train_dataset, model, optim, loss_fn)
        accuracy = validate_one_epoch(acc, val_dataset, model)
        acc.log({"train_loss": loss, "val_accuracy": accuracy}, step=epoch)
        acc.print(f"epoch {epoch + 1}: loss {loss:.4f}, validation accuracy {accuracy:.3f}")
        upload_model_checkpoint(acc, f"epoch-{epoch + 1:04d}")
    acc.end_training()


if __name__ == "__main__":
    main()
