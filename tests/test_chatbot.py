from __future__ import annotations

from rlchat.chatbot import Chatbot, as_corpus_line
from rlchat.config import TokenizerConfig
from rlchat.tokenizer import train_tokenizer


def test_a_message_without_final_punctuation_gets_a_full_stop():
    assert as_corpus_line("hi") == "hi."
    assert as_corpus_line("how are you  ") == "how are you."
    assert as_corpus_line("in 1999") == "in 1999."


def test_a_punctuated_or_empty_message_is_left_alone():
    for message in ("hi!", "what?", "well...", "i said 'no'", "wait --", "", "   "):
        assert as_corpus_line(message) == message


def test_the_bot_reads_a_bare_greeting_as_the_corpus_writes_it():
    texts = ["hi.", "hello there.", "how are you?"] * 5
    tokenizer = train_tokenizer(texts, TokenizerConfig(kind="word", min_count=1))
    bot = Chatbot(name="t", model=None, tokenizer=tokenizer, config={}, device=None)
    assert bot.encode_input("hi") == bot.encode_input("hi.") == tokenizer.encode("hi.")
    assert bot.encode_input("how are you?") == tokenizer.encode("how are you?")


def test_past_turns_are_read_as_corpus_lines_too():
    texts = ["hi.", "hello there.", "how are you?"] * 5
    tokenizer = train_tokenizer(texts, TokenizerConfig(kind="word", min_count=1))
    config = {"data": {"context_turns": 1}}
    bot = Chatbot(name="t", model=None, tokenizer=tokenizer, config=config, device=None)
    assert bot.encode_input("how are you?", ["hi"]) == bot.encode_input("how are you?", ["hi."])
