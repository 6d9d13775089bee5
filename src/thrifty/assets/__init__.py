"""Built-in model and corpus, user model/corpus checks; setup, doctor, models, corpora."""
