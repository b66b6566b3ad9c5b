"""The network: a KAN of layers, its derivative engines and grid evaluation."""
