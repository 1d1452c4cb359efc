# imported by dataloaders/split_MNIST.py but never used there
