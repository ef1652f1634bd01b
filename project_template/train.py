"""Training with the decorator API, on the datasets of ``Datasets/ProjectDatasets.py``.

    python manage.py migrate-data                   # chunk, test and upload the datasets
    python -m benchkit run train.py                 # train (add --processes 2 for two processes)
    python -m benchkit run train.py --resume        # continue the latest run from its checkpoint
    python -m benchkit run train.py -c lr=0.001 -c epochs=10

``run.loader`` streams a dataset of the store as this process's share, with the
``IterableChunk`` class that decodes it; ``run.epochs()`` resumes after the last checkpoint.
"""

from __future__ import annotations

import torch
from Datasets.ProjectDatasets import CatDogChunk
from Models.ProjectModels import CatDogNet

import benchkit as bench


@bench.train(config={"epochs": 3, "batch_size": 32, "lr": 3e-3, "workers": 2})
def train(run: bench.Run) -> float:
    train_loader = run.loader("train", shuffle=True, num_workers=run.config.workers,
                              chunk_class=CatDogChunk, chunk_args=[True])  # fmt: skip
    val_loader = run.loader("val", num_workers=run.config.workers, chunk_class=CatDogChunk, chunk_args=[False])
    model = CatDogNet()
    optim = torch.optim.AdamW(model.parameters(), lr=run.config.lr)
    model, optim, train_loader = run.prepare(model, optim, train_loader)
    accuracy = 0.0
    for epoch in run.epochs():
        model.train()
        for images, labels in run.progress(train_loader):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            run.backward(loss)
            optim.step()
            optim.zero_grad()
            run.log({"loss": loss})
        model.eval()
        counts = torch.zeros(2, device=run.device)  # correct, total
        with torch.no_grad():
            for images, labels in val_loader:
                counts += torch.stack([(model(images).argmax(1) == labels).sum(), labels.new_tensor(labels.numel())])
        correct, total = run.reduce(counts, "sum").tolist()
        accuracy = correct / max(total, 1)
        run.log({"val_accuracy": accuracy, "epoch": epoch + 1})
        run.print(f"epoch {epoch + 1}: validation accuracy {accuracy:.3f}")
        run.save_checkpoint()
    return accuracy
