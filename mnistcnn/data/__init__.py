"""The MNIST files: fetched from mirrors and verified (mirrors), decoded once into tensors,
split into training and held-out images (mnist)."""
