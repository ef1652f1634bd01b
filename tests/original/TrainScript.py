# The original README's training code: train_one_epoch and validate_one_epoch verbatim, and its
# main() snippets (get_dataset, prepare, the tracker, the epoch loop) put together. Added, as the
# README leaves them to the reader: get_class_loss, val_length, a checkpoint name, the model
# (Models/ProjectModels.py) and a smaller tracker_config so the test is quick.
import numpy as np
import torch
from accelerate import Accelerator
from BenchKit.Train.Helpers import get_accelerator, wipe_temp
from BenchKit.Data.Helpers import get_dataset
from BenchKit.Tracking.Tracker import BenchAccelerateTracker
from BenchKit.Tracking.Helpers import upload_model_checkpoint
import torch.nn as nn
import torch.optim as opt
from tqdm import tqdm
from torch.utils.data import DataLoader

from Datasets.ProjectDatasets import CatDogChunk
from Models.ProjectModels import CDResNet


def get_class_loss(accelerate, outputs, targets):
    correct = ((outputs > 0.5).float() == targets).sum().reshape(1)
    return correct, torch.tensor([targets.numel()], device=accelerate.device)


def train_one_epoch(accelerate: Accelerator,
                    train_dl: DataLoader,
                    model,
                    optim,
                    loss_fn):
    
    model.train()
    total_loss = 0
    count = 0
    
    for batch in train_dl:
        
        optim.zero_grad()
        
        targets, inputs = batch
        outputs = model(inputs)
        
        targets = targets.type(torch.FloatTensor)
        targets = targets.to(accelerate.device)

        loss = loss_fn(outputs, targets)
        accelerate.backward(loss)
        optim.step()
        
        all_loss, outputs = accelerate.gather((loss, outputs))
        total_loss += torch.reshape(all_loss, (-1,)).item()
        count += torch.tensor(outputs.size()[0], device=accelerate.device)

    print(total_loss / count)
    wipe_temp(accelerate)


def validate_one_epoch(accelerate: Accelerator,
                       test_dl: DataLoader,
                       model,
                       length):
    model.eval()
    total_correct = 0
    total_length = 0
    for batch in tqdm(test_dl,
                      colour="blue",
                      total=length + 1,
                      disable=not accelerate.is_local_main_process):

        accelerate.free_memory()
        targets, inputs = batch
        outputs = model(inputs)
        targets = targets.type(torch.FloatTensor)
        targets = targets.to(accelerate.device)

        class_count, length = get_class_loss(accelerate, outputs, targets)
        class_count, length = accelerate.gather((class_count, length))

        total_length += torch.sum(torch.reshape(length, (-1,)))
        total_correct += torch.sum(torch.reshape(class_count, (-1,)))

    val_loss: torch.Tensor = total_correct / total_length
    wipe_temp(accelerate)


def main():
    tracker_config = {
            "epochs": 2,
            "bs": 4,
            "lr": 1e-2
        }

    train_dataset: DataLoader = get_dataset(CatDogChunk,
                                                True,
                                                "train",
                                                tracker_config["bs"],
                                                2,
                                                True)


    val_dataset: DataLoader = get_dataset(CatDogChunk,
                                          True,
                                          "val",
                                          tracker_config["bs"],
                                          2,
                                          False)

    model = CDResNet(64)
    loss_fn = nn.BCELoss()
    optim = opt.Adam(params=model.parameters(), lr=tracker_config["lr"])

    tracker = BenchAccelerateTracker("trial tun",tracker_config["epochs"])
    acc: Accelerator = get_accelerator(log_with=tracker)
    acc.init_trackers("my_project", config=tracker_config)
    model, loss_fn, optim, train_dataset, val_dataset = acc.prepare(model,
                                                                    loss_fn,
                                                                    optim,
                                                                    train_dataset,
                                                                    val_dataset)
    val_length = len(val_dataset)

    for epoch in range(tracker_config["epochs"]):
        train_one_epoch(acc, train_dataset, model, optim, loss_fn)
            
        validate_one_epoch(acc, val_dataset, model, val_length)
        upload_model_checkpoint(acc, f"epoch-{epoch + 1}")
    acc.end_training()


if __name__ == "__main__":
    main()
