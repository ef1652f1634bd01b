# The original README's dataset code, verbatim (the CatDog and CatDogChunk classes and main()).
# Only the imports above the first class and the three names main() uses (d_path, train_list,
# val_list) are added: the README leaves them to the reader.
import os

import torchvision.transforms as tf
from PIL import Image

from BenchKit.Data.Datasets import ProcessorDataset, IterableChunk

d_path = os.environ["CATDOG_IMAGES"]
train_list = sorted(f for f in os.listdir(d_path) if f.split(".")[1] < "1")
val_list = sorted(f for f in os.listdir(d_path) if f.split(".")[1] >= "1")


class CatDog(ProcessorDataset):

    def __init__(self,
                 dataset_path: str,
                 data_list: list[str]):
        self._dataset_path = dataset_path
        self._data_list = data_list

    @staticmethod
    def convert_label_to_numeric(animal: str) -> int:
        return 0 if animal == "cat" else 1

    def __len__(self):
        return len(self._data_list)

    def get_label_and_numeric_data(self, item):
        split = self._data_list[item].split(".")[0]
        assert len(split) == 3

        return self.convert_label_to_numeric(split)

    def get_file(self, item) -> list[str]:
        return [os.path.join(self._dataset_path, self._data_list[item])]


class CatDogChunk(IterableChunk):

    def __init__(self,
                 name: str,
                 cloud: bool,
                 is_train: bool):

        super().__init__(name, cloud)

        mean = [0.4766, 0.4527, 0.3926]
        std = [0.2275, 0.2224, 0.2210]

        self._trans = tf.Compose([tf.Resize((256, 256)),
                                  tf.RandomHorizontalFlip(),
                                  tf.ToTensor(),
                                  tf.Normalize(mean, std)]) if is_train else tf.Compose([tf.Resize((256, 256)),
                                                                                         tf.ToTensor(),
                                                                                         tf.Normalize(mean, std)])

    def _data_iterator(self):
        for labels, file in super()._data_iterator():
            img_pil = Image.open(file[0]).convert('RGB')
            yield labels, self._trans(img_pil)


def main():
    # Write your data loading code here
    data = [
        (CatDog(d_path, train_list), CatDogChunk, "train", [True], {}),
        (CatDog(d_path, val_list), CatDogChunk, "val", [False], {})
    ]

    return data
