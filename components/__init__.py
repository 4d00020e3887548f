"""The sigmae-gen component catalog: tested PyTorch building blocks that the generator inlines."""
