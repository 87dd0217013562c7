"""Data for pretraining: datasets, labeled subsets, augmentations and the generated shapes."""
