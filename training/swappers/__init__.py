"""One module per swapper: its config section (architectures, loss weights, data recipe)
and its objective. The registry of swappers is :data:`training.registry.SWAPPERS`."""
