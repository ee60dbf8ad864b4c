"""The GoogLeNet detector (Szegedy et al. 2014, section 8): region classifiers, ensembles, evaluation."""
