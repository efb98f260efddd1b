"""rlchat: a chatbot that learns to talk from movie dialogues.

An LSTM encoder-decoder with attention, trained with cross-entropy and then with
self-critical sequence training on the Cornell Movie-Dialogs Corpus.
"""

__version__ = "0.1.0"
