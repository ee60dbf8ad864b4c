"""The GoogLeNet classification backbone (Szegedy et al. 2014): model, weights, training, testing."""
