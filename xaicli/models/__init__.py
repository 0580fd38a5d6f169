"""Model loading: built-in models, torchvision, TorchScript and Python factories."""
