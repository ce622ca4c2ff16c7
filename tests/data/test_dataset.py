import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from glioseg.data.augment import AugmentConfig
from glioseg.data.dataset import PatchDataset, WholeVolumeDataset, foreground_voxels
from glioseg.errors import GliosegError

PATCH = (16, 16, 16)
FULL = AugmentConfig(flip_prob=0.5, rotate_prob=0.5, scale_prob=0.5, intensity_prob=0.5, gamma_prob=0.5, noise_prob=0.5)


def make_cases(shapes=((40, 41, 38), (36, 44, 40)), channels=2):
    """Noisy brains with a small tumor: edema shell, necrotic and enhancing cores of a few voxels."""
    rng = np.random.default_rng(1)
    images, labels = [], []
    for shape in shapes:
        image = np.zeros((channels, *shape), dtype=np.float32)
        image[:, 3:-3, 3:-3, 3:-3] = rng.standard_normal((channels, *(s - 6 for s in shape)))
        label = np.zeros(shape, dtype=np.uint8)
        x, y, z = (s // 2 for s in shape)
        label[x - 3 : x + 3, y - 3 : y + 3, z - 3 : z + 3] = 2
        label[x - 1 : x + 1, y - 1 : y + 1, z - 1 : z + 1] = 3
        label[x - 2, y - 2, z - 2] = 1
        image[:, label > 0] += 3.0
        images.append(image)
        labels.append(label)
    return images, labels


def test_items_have_the_patch_shape_and_types():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=6, augment=FULL, seed=0)
    assert len(dataset) == 6
    for image, label in dataset:
        assert image.shape == (2, *PATCH) and image.dtype == torch.float32
        assert label.shape == PATCH and label.dtype == torch.int64


def test_same_seed_epoch_index_gives_identical_patches_and_other_epochs_differ():
    images, labels = make_cases()
    a = PatchDataset(images, labels, PATCH, samples_per_epoch=4, augment=FULL, seed=3)
    b = PatchDataset(images, labels, PATCH, samples_per_epoch=4, augment=FULL, seed=3)
    b[1]  # reading other items first must not matter
    for i in range(4):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    first = [a[i][0] for i in range(4)]
    a.set_epoch(1)
    assert not any(torch.equal(x, a[i][0]) for i, x in enumerate(first))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i][0]) for i, x in enumerate(first))
    c = PatchDataset(images, labels, PATCH, samples_per_epoch=4, augment=FULL, seed=4)
    assert not torch.equal(c[0][0], first[0])


def test_foreground_fraction_one_always_contains_tumor_and_zero_mostly_not():
    images, labels = make_cases()
    always = PatchDataset(
        images, labels, (8, 8, 8), samples_per_epoch=60, foreground_fraction=1.0, augment=FULL, seed=0
    )
    assert all((always[i][1] > 0).any() for i in range(len(always)))
    never = PatchDataset(images, labels, (8, 8, 8), samples_per_epoch=60, foreground_fraction=0.0, seed=0)
    hits = np.mean([(never[i][1] > 0).any().item() for i in range(len(never))])
    assert hits < 0.3  # a random 8^3 patch rarely meets the 6^3 tumor


def test_foreground_sampling_picks_classes_uniformly_so_small_ones_are_seen():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=300, foreground_fraction=1.0, seed=0)
    centers = [labels[0][tuple(dataset.patch_center(0, np.random.default_rng([0, i])))] for i in range(300)]
    counts = np.bincount(centers, minlength=4)
    assert counts[0] == 0
    # the single necrotic voxel is a centre a third of the time, not 1 / 224 of the time
    assert np.all(np.abs(counts[1:] / 300 - 1 / 3) < 0.1)


def test_volume_smaller_than_patch_is_padded_to_the_exact_size():
    images, labels = make_cases(shapes=((10, 40, 7),))
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=5, foreground_fraction=0.5, seed=0)
    for image, label in dataset:
        assert image.shape == (2, *PATCH) and label.shape == PATCH
        assert not image[:, :3].any() and not image[:, 13:].any()  # 10 voxels centred in 16
        assert not image[..., :4].any() and not image[..., 11:].any()  # 7 voxels centred in 16
        assert image[:, 3:13, :, 4:11].any()


def test_patches_stay_inside_a_large_enough_volume():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=40, foreground_fraction=0.5, seed=0)
    for i in range(40):
        rng = np.random.default_rng([0, 0, i])
        case = int(rng.integers(2))
        start = dataset.patch_center(case, rng) - np.array(PATCH) // 2
        assert np.all(start >= 0) and np.all(start + PATCH <= labels[case].shape)


def test_plain_patches_are_exact_crops():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=3, seed=5)
    for i in range(3):
        rng = np.random.default_rng([5, 0, i])
        case = int(rng.integers(2))
        start = dataset.patch_center(case, rng) - np.array(PATCH) // 2
        box = tuple(slice(s, s + p) for s, p in zip(start, PATCH, strict=True))
        image, label = dataset[i]
        assert np.array_equal(image.numpy(), images[case][(slice(None), *box)])
        assert np.array_equal(label.numpy(), labels[case][box])


def test_dataloader_with_workers_gives_the_same_batches():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=8, augment=FULL, seed=2)
    dataset.set_epoch(3)
    serial = list(DataLoader(dataset, batch_size=2, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 4
    for (xs, ys), (xp, yp) in zip(serial, parallel, strict=True):
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


def test_distributed_ranks_read_the_items_of_their_indices():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=6, augment=FULL, seed=2)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        for index, (image, _) in zip(sampler, DataLoader(dataset, sampler=sampler), strict=True):
            assert torch.equal(image[0], dataset[index][0])
            seen.append(index)
    assert sorted(seen) == list(range(6))


def test_dataset_pickles():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=2, augment=FULL, seed=1)
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[1][0], dataset[1][0])


def test_foreground_voxels_are_compact_and_subsampled():
    _, labels = make_cases()
    voxels = foreground_voxels(labels[0], max_voxels=50, seed=0)
    assert set(voxels) == {1, 2, 3}
    assert all(v.dtype == np.int32 for v in voxels.values())
    assert voxels[1].size == 1 and voxels[3].size == 8 and voxels[2].size == 50
    assert np.all(labels[0].ravel()[voxels[2]] == 2)


def test_whole_volume_dataset():
    images, labels = make_cases()
    plain = WholeVolumeDataset(images, labels)
    assert len(plain) == 2
    image, label = plain[1]
    assert np.array_equal(image.numpy(), images[1]) and np.array_equal(label.numpy(), labels[1])
    assert label.dtype == torch.int64
    augmented = WholeVolumeDataset(images, labels, augment=FULL, seed=0)
    a, b = augmented[0], augmented[0]
    assert torch.equal(a[0], b[0]) and a[0].shape == (2, 40, 41, 38)
    augmented.set_epoch(1)
    assert not torch.equal(a[0], augmented[0][0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patch_size": (16, 16)},
        {"samples_per_epoch": 0},
        {"foreground_fraction": 1.5},
    ],
)
def test_invalid_arguments_raise(kwargs):
    images, labels = make_cases()
    arguments = {"patch_size": PATCH, "samples_per_epoch": 2, **kwargs}
    with pytest.raises(GliosegError):
        PatchDataset(images, labels, **arguments)


def test_mismatched_cases_raise():
    images, labels = make_cases()
    with pytest.raises(GliosegError, match="do not match"):
        PatchDataset(images, [labels[1], labels[0]], PATCH, 2)
    with pytest.raises(GliosegError, match="internal convention"):
        WholeVolumeDataset(images, [labels[0], labels[1] * 2])


def test_foreground_fraction_is_respected_on_average():
    images, labels = make_cases()
    dataset = PatchDataset(images, labels, PATCH, samples_per_epoch=400, foreground_fraction=0.5, seed=0)
    on_tumor = []
    for i in range(400):
        rng = np.random.default_rng([0, 0, i])
        case = int(rng.integers(2))
        on_tumor.append(labels[case][tuple(dataset.patch_center(case, rng))] > 0)
    assert 0.4 < np.mean(on_tumor) < 0.62  # 0.5 on purpose, plus a few random hits
