"""Stand-in for torchvision (cannot be imported with this CPU torch): only the transforms hypercl's
permuted MNIST uses, done as torchvision does them (PIL image, zero padding, ToTensor scaling)."""
