"""GoogLeNet region proposals: selective search (Uijlings et al.) and MultiBox (Erhan et al.)."""
