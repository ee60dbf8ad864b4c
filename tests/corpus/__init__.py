"""Bad-input corpus tests: ``make_corpus.py`` writes the files, ``test_corpus_*.py`` run them through the CLIs."""
