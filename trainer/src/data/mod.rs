//! Datasets and image transforms.
