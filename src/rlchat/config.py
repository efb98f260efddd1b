"""Typed configurations. Every default lives here once; the CLI maps onto these fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass
class DataConfig:
    """Which pairs of the corpus a run uses and how they are split."""

    genres: list[str] = field(
        default_factory=list, metadata={"help": "genres to keep; empty = all"}
    )
    split_seed: int = field(default=0, metadata={"help": "seed of the split"})
    # By movie, no test movie is seen in training (its characters, names and running jokes);
    # by conversation, every test movie also has conversations in training.
    split_by: Literal["conversation", "movie"] = field(
        default="conversation",
        metadata={"help": "conversation or movie: the unit that falls wholly in one split"},
    )
    # 85/5/10 by conversation. Sentence BLEU-2 is heavy-tailed (a few exact matches of short
    # replies carry much of its mean): at 5% test (1,658 comedy pairs in the excerpt) its
    # bootstrap interval is about +-0.004, as wide as the gain RL makes, so test gets 10%.
    valid_fraction: float = field(
        default=0.05, metadata={"help": "share of conversations in validation"}
    )
    test_fraction: float = field(default=0.10, metadata={"help": "share of conversations in test"})
    lenient: bool = field(default=False, metadata={"help": "skip and count malformed corpus lines"})
    context_turns: int = field(
        default=0, metadata={"help": "previous utterances joined to the input"}
    )
    # A backward model p(input | reply) is trained on the swapped pairs: MMI reranking and the
    # mutual-information reward ask it how well a reply points back to its input.
    direction: Literal["forward", "backward"] = field(
        default="forward",
        metadata={"help": "forward: input -> reply; backward: reply -> input (for MMI)"},
    )


@dataclass
class TokenizerConfig:
    """How text becomes ids."""

    kind: Literal["bpe", "word"] = field(
        default="bpe", metadata={"help": "bpe (subword) or word", "flag": "--tokenizer"}
    )
    vocab_size: int = field(default=8000, metadata={"help": "bpe: target vocabulary size"})
    # The original project pruned words seen fewer than 10 times; published BLEU figures use it.
    min_count: int = field(default=10, metadata={"help": "word: drop words seen fewer times"})
    max_tokens: int = field(default=20, metadata={"help": "drop pairs with a longer side"})
    drop_unknown: bool = field(
        default=False, metadata={"help": "word: drop pairs with a pruned word, as the original did"}
    )


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return asdict(config)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild a config, ignoring keys it does not know (older or newer bundles)."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class ModelConfig:
    """Shape of the encoder-decoder; enough to rebuild the model from a checkpoint alone."""

    vocab_size: int = field(default=8000, metadata={"help": "set from the tokenizer"})
    embedding_dim: int = field(default=256, metadata={"help": "token embedding size"})
    hidden_size: int = field(default=512, metadata={"help": "LSTM state size (both directions)"})
    layers: int = field(default=1, metadata={"help": "LSTM layers in encoder and decoder"})
    bidirectional: bool = field(default=True, metadata={"help": "bidirectional encoder"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and outputs"})
    attention: Literal["dot", "general", "concat"] = field(
        default="general", metadata={"help": "Luong attention score"}
    )
    # Input feeding (Luong et al. 2015, sec. 3.3) forces a step-by-step decoder loop in training;
    # off by default so teacher forcing runs the decoder LSTM over the whole sequence at once.
    input_feeding: bool = field(
        default=False, metadata={"help": "feed the attentional vector back"}
    )
    # Tying shares the embedding with the output layer (Press & Wolf 2017): fewer parameters and
    # a cheaper softmax (embedding_dim < hidden_size), which matters most on a CPU.
    tie_embeddings: bool = field(
        default=True, metadata={"help": "share input and output embeddings"}
    )


@dataclass
class DecodeConfig:
    """How replies are generated at chat, evaluation and serving time."""

    strategy: Literal["greedy", "beam", "sample"] = field(
        default="greedy", metadata={"help": "greedy, beam or sample"}
    )
    beam_size: int = field(default=5, metadata={"help": "beam: hypotheses kept"})
    # GNMT length penalty ((5 + len) / 6) ** alpha; 0 disables, larger favours longer replies.
    length_penalty: float = field(default=1.0, metadata={"help": "beam: length penalty alpha"})
    temperature: float = field(default=1.0, metadata={"help": "sample: softmax temperature"})
    top_k: int = field(default=0, metadata={"help": "sample: keep the k best tokens (0 = all)"})
    top_p: float = field(default=1.0, metadata={"help": "sample: nucleus mass (1 = all)"})
    max_tokens: int = field(default=20, metadata={"help": "longest reply in tokens"})
    min_tokens: int = field(default=1, metadata={"help": "shortest reply in tokens"})
    # Loops like "gonna gonna gonna" are the commonest complaint about such bots.
    no_repeat_ngram: int = field(
        default=3, metadata={"help": "never repeat an n-gram of this size (0 = off)"}
    )
    # MMI-bidi (Li et al. 2016, arXiv:1510.03055): decode several candidates (samples, or
    # beam search's N best) and keep the one that best fits this input and no other,
    # log p(r|s) + weight * log p_b(s|r) + length * |r|, under a backward model p_b.
    rerank: Literal["none", "mmi"] = field(
        default="none", metadata={"help": "none, or mmi (needs a backward model)"}
    )
    candidates: int = field(
        default=5, metadata={"help": "mmi: candidates per input (samples, or beam's N best)"}
    )
    mmi_weight: float = field(
        default=4.0, metadata={"help": "mmi: weight of log p_backward(input | reply)"}
    )
    mmi_length: float = field(
        default=1.2, metadata={"help": "mmi: bonus per reply token (the paper's gamma)"}
    )
    mmi_form: Literal["mean", "sum"] = field(
        default="mean", metadata={"help": "mmi: per-token mean log-probs, or sums as the paper"}
    )


# The decoding the quickstart serves: MMI reranking of 5 nucleus samples (p 0.75, T 1), per-
# token means, backward weight 4, length bonus 1.2 a token: measured on the whole comedy
# validation split of three draws of the quickstart (experiments/mmi_sweep.py --choose-from,
# docs/experiments.md), the best mean BLEU-2 among the settings with top1 <= 2%, unique >= 0.6,
# distinct-2 >= 0.15 and no more replies holding a word unknown to the training lines than the
# held-out replies (12.6%) in all three. The earlier choice (10 samples at p 0.95, bonus 0.4)
# put such a non-word in 20-23% of replies and had less BLEU-2 on the same runs. Without a
# length bonus every setting fell to short replies ("home.", "me."); beam candidates kept
# BLEU-2 but not variety (top1 0.3-0.6). The mmi_* defaults above are the same choice.
MMI_DECODING: dict[str, Any] = {"strategy": "sample", "top_p": 0.75, "rerank": "mmi"}


def served_decoding() -> DecodeConfig:
    """How the quickstart's bot answers (and a distillation teacher): MMI reranking of
    sampled candidates (defaults chosen on the validation split, `experiments/mmi_sweep.py`)."""
    return replace(DecodeConfig(), **MMI_DECODING)


@dataclass
class LoopConfig:
    """What every training stage shares: batches, optimiser, budget, validation, checkpoints."""

    batch_size: int = field(default=64, metadata={"help": "pairs per step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    optimizer: Literal["adam", "adamw"] = field(default="adam", metadata={"help": "adam or adamw"})
    weight_decay: float = field(default=0.0, metadata={"help": "adamw weight decay"})
    schedule: Literal["constant", "cosine", "plateau"] = field(
        default="plateau", metadata={"help": "lr schedule after warm-up"}
    )
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    grad_clip: float = field(default=5.0, metadata={"help": "max gradient norm (0 = off)"})
    epochs: int = field(default=10, metadata={"help": "passes over the training pairs"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0 = no cap)"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop after this time (0 = no cap)"})
    eval_every: int = field(default=0, metadata={"help": "validate every N steps (0 = per epoch)"})
    max_eval_pairs: int = field(default=2000, metadata={"help": "cap on validation pairs"})
    patience: int = field(default=3, metadata={"help": "stop after N evals without improvement"})
    checkpoint_every: int = field(
        default=500, metadata={"help": "save resumable state every N steps"}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "resumable checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "seed of weights, batches and dropout"})
    # Polyak averaging: validation and best/ use an exponential moving average of the weights,
    # training goes on from the last ones. At the quickstart's fine-tune budget greedy CE's
    # commonest reply moved from 23% to 65% of validation inputs in 27 steps of 400; the
    # average does not follow that swing, but in two whole-recipe draws it did not make the
    # served bot better, so the quickstart leaves it off (docs/experiments.md).
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "validate and save a moving average of the weights, this decay a step "
            "(0 = off)",
            "min": 0,
            "max": 0.9999,
        },
    )


@dataclass
class CrossEntropyConfig(LoopConfig):
    """Teacher-forced maximum-likelihood training."""

    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    # Ratio < 1 is scheduled sampling (Bengio et al. 2015); it forces a step-by-step decoder.
    teacher_forcing: float = field(default=1.0, metadata={"help": "share of gold decoder inputs"})
    # Maximum likelihood puts the decoder's mode on the commonest tokens ("i", "'m", "not"),
    # which greedy decoding then says to every input. Weighting each target token by its
    # training frequency ** -a (as FACE, Jiang et al. 2019, arXiv:1902.09191, does with a
    # linear weight) moves gradient to the rarer, content-bearing tokens; the weights average 1
    # over the training targets, so the loss keeps its scale. Validation stays unweighted.
    frequency_weighting: float = field(
        default=0.0,
        metadata={"help": "weight target tokens by training frequency ** -a (0 = off)", "min": 0},
    )
    # Entropy-based filtering (Csaky et al. 2019, arXiv:1905.05471), its identity variant: a
    # reply said after many different inputs ("what?", "no.") teaches no fit to any of them.
    max_reply_count: int = field(
        default=0,
        metadata={
            "help": "drop training pairs whose reply occurs more often (0 = keep all)",
            "min": 0,
        },
    )
    # Negative training (He & Glass 2019, arXiv:1903.02134, its frequent-response variant):
    # each step also decodes its batch greedily, and a reply that makes up more than this
    # share of the last `negative_window` greedy replies is trained down at its input. The
    # penalty is unlikelihood, -log(1 - p) per token (Welleck et al. 2019, arXiv:1908.04319),
    # which is bounded where He & Glass's +log p is not.
    negative_threshold: float = field(
        default=0.0,
        metadata={
            "help": "train down greedy replies above this share of recent ones (0 = off)",
            "min": 0,
            "max": 1,
        },
    )
    negative_weight: float = field(
        default=1.0,
        metadata={"help": "weight of the unlikelihood of frequent greedy replies", "min": 0},
    )
    negative_window: int = field(
        default=1000,
        metadata={"help": "greedy replies the frequencies are counted over", "min": 1},
    )
    # Vocabulary unlikelihood (Li et al. 2020, arXiv:1911.03860): each step also decodes its
    # batch greedily; the tokens the last `negative_window` greedy replies say more often than
    # the training replies do are trained down wherever those replies say them, each by
    # -log(1 - p) weighted with its share of KL(greedy || training), p_g log(p_g / p_h). Unlike
    # negative training it pushes on the overused words, not on whole replies.
    vocab_unlikelihood: float = field(
        default=0.0,
        metadata={
            "help": "weight of the unlikelihood of tokens greedy replies overuse (0 = off)",
            "min": 0,
        },
    )
    # The penalty prices BPE pieces that continue a word ("'t") as it prices words; training
    # "'t" down leaves "i don." behind. Spared, only tokens that start a word (and
    # punctuation) are priced, and a word is never cut short.
    # Prefix unlikelihood: the same KL term priced on how replies begin rather than on single
    # tokens anywhere. Greedy CE's replies collapse at their start (86% of one bot's began
    # with "i'm"); a prefix of up to `prefix_tokens` tokens that greedy replies begin with
    # more often than people's do is trained down at the token that completes it, by
    # -log(1 - p) weighted with p_g log(p_g / p_h) over replies. Rides on the same greedy rows.
    prefix_unlikelihood: float = field(
        default=0.0,
        metadata={
            "help": "weight of the unlikelihood of reply beginnings greedy replies overuse "
            "(0 = off)",
            "min": 0,
        },
    )
    prefix_tokens: int = field(
        default=3,
        metadata={"help": "longest reply beginning prefix unlikelihood prices", "min": 1},
    )
    # Decoding the whole batch greedily every step costs two thirds of the fine-tune's steps
    # at its minutes; a share of each (shuffled) batch gives the window its replies and the
    # penalty its rows at a fraction of that cost.
    vocab_unlikelihood_share: float = field(
        default=1.0,
        metadata={
            "help": "share of each batch decoded greedily for vocabulary unlikelihood",
            "min": 0.01,
            "max": 1,
        },
    )
    vocab_unlikelihood_spare_pieces: bool = field(
        default=False,
        metadata={"help": 'leave word-continuing pieces ("\'t") out of vocabulary unlikelihood'},
    )
    # Greedy CE's commonest reply swings from step to step under vocabulary unlikelihood
    # (0.08 to 0.35 of validation inputs 30 steps apart, at level loss): which phase the
    # budget ends in decided top1 more than any setting did. Validating often and choosing
    # best/ by loss + w * top1 takes that choice away from the last step; the schedule and
    # early stopping still follow the loss alone.
    select_top1_weight: float = field(
        default=0.0,
        metadata={
            "help": "choose best/ by validation loss + this x the share of the commonest greedy "
            "reply (0 = loss alone)",
            "min": 0,
        },
    )
    # Word dropout (Bowman et al. 2016, arXiv:1511.06349): a share of the decoder's input
    # tokens become <unk> in training, so the reply so far predicts less of the next token and
    # the decoder must draw on the input; greedy CE's one reply is a decoder that need not.
    word_dropout: float = field(
        default=0.0,
        metadata={
            "help": "share of the decoder's input tokens replaced by <unk> in training (0 = off)",
            "min": 0,
            "max": 1,
        },
    )
    # Sequence-level distillation (`rlchat.train.distillation`): the teacher's MMI-reranked
    # replies (served decoding, with its backward model) replace the human reply of a share of
    # the training pairs, so greedy decoding says what reranking chose. Decoding them is part
    # of the run's --max-minutes.
    distil_teacher: str = field(
        default="",
        metadata={"help": "a CE run whose MMI-reranked replies become training targets"},
    )
    distil_backward: str = field(
        default="", metadata={"help": "the backward run the distillation teacher reranks with"}
    )
    distil_share: float = field(
        default=0.5,
        metadata={
            "help": "share of training pairs whose reply the teacher's replaces",
            "min": 0.01,
            "max": 1,
        },
    )
    # Mismatched inputs, MMI at training time: each reply is also scored after another row's
    # input, and max(0, m - (l(r|s) - l(r|s'))) on per-token mean log-probs asks it to fit its
    # own input by m nats a token more. A reply that fits any input cannot meet the margin and
    # is pushed down after the inputs it does not answer: in expectation the target becomes
    # (1 + w) p(r|s) - w p(r), the anti-language-model of Li et al. 2016 (arXiv:1510.03055)
    # learned instead of decoded.
    contrastive_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the mismatched-input margin loss (0 = off)", "min": 0},
    )
    contrastive_margin: float = field(
        default=1.0,
        metadata={
            "help": "nats a token a reply must fit its input better than another's",
            "min": 0,
        },
    )


# Measured on comedy (see README): BLEU alone, or BLEU with a small ease-of-answering ("dull")
# weight, collapses the bot onto one catch-all reply ("i don't want you to talk.") within a few
# hundred steps; a large dull weight is gamed the same way, and coherence collapses it onto
# "i don't know.". The generic term (bigrams the batch's other inputs also got) keeps replies
# specific to their input. Its weight trades BLEU-2 against distinct-2: at 0.1 BLEU-2 rises
# most but distinct-2 falls; at 0.2 and above distinct-2 rises but BLEU-2 barely moves. BLEU
# against many references pays stock replies ("i don't know.", "what?") wherever the input is
# ambiguous, so RL falls back on them; the stock term prices that (0.1 is too little).
DEFAULT_REWARD = "bleu=1.0,repeat=0.5,generic=0.15,stock=0.3"

# `vocab_unlikelihood` of the quickstart's genre fine-tune (off in `train ce`): in paired
# whole-recipe draws on validation it cut greedy CE's top1 (0.19 and 0.05 against 0.32 and
# 0.46) with RL and the served bot level or better (docs/experiments.md).
FINETUNE_VOCAB_UNLIKELIHOOD = 10.0
# Steps between the genre fine-tune's validations when best/ is chosen by top1 as well: greedy
# CE's commonest reply moved by up to 0.19 of validation inputs in 30 steps (330 in all).
FINETUNE_EVAL_EVERY = 30


@dataclass
class RLConfig(LoopConfig):
    """Self-critical sequence training (Rennie et al. 2016, arXiv:1612.00563)."""

    batch_size: int = field(default=32, metadata={"help": "inputs per step (each sampled K times)"})
    # A small rate: RL starts from a good CE model and must not wreck its language.
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    schedule: Literal["constant", "cosine", "plateau"] = field(
        default="constant", metadata={"help": "lr schedule after warm-up"}
    )
    epochs: int = field(default=1, metadata={"help": "passes over the training pairs"})
    eval_every: int = field(
        default=100, metadata={"help": "validate every N steps (0 = per epoch)"}
    )
    # The whole validation split (a few seconds a check): the best checkpoint is chosen on it,
    # and on 500 pairs the choice followed noise.
    max_eval_pairs: int = field(default=2000, metadata={"help": "cap on validation pairs"})
    patience: int = field(default=0, metadata={"help": "stop after N evals without improvement"})
    checkpoint_every: int = field(
        default=100, metadata={"help": "save resumable state every N steps"}
    )
    samples: int = field(default=4, metadata={"help": "K sampled replies per input"})
    baseline: Literal["greedy", "mean"] = field(
        default="greedy",
        metadata={"help": "greedy reply (SCST) or mean of the other samples (leave-one-out)"},
    )
    reward: str = field(
        default=DEFAULT_REWARD, metadata={"help": "weighted rewards, e.g. bleu=1,dull=0.5"}
    )
    # Measured on comedy (see README): at 0.2 the references' cross-entropy keeps the policy's
    # words varied while BLEU lengthens its replies (distinct-2 rises instead of falling) and
    # holds perplexity near the CE start; the RL step costs one more teacher-forced pass.
    backward: str = field(
        default="",
        metadata={"help": "backward run the mutual reward asks (train ce --direction backward)"},
    )
    ce_weight: float = field(
        default=0.2, metadata={"help": "weight of cross-entropy on references (against drift)"}
    )
    entropy_bonus: float = field(default=0.0, metadata={"help": "weight of the entropy bonus"})
    length_normalise: bool = field(
        default=False, metadata={"help": "divide a sample's log-prob by its length"}
    )
    skip_solved: bool = field(
        default=False, metadata={"help": "skip inputs whose greedy reward is already maximal"}
    )
    # Below 1 the samples stay near the greedy reply that evaluation and chat use, so the
    # reward judges (and the gradient moves) what the bot actually says; log-probs are
    # those of the tempered policy, so the gradient stays unbiased for it.
    temperature: float = field(
        default=0.5, metadata={"help": "sampling temperature of the RL policy"}
    )
    max_tokens: int = field(default=20, metadata={"help": "longest sampled reply"})
    # The run's own reward has terms that price stock and shared replies, so choosing by it
    # picks the checkpoint that best avoids what it prices, whatever else it says. BLEU-2
    # against the validation references is the fit to held-out replies; valid/top1 (share of
    # the commonest reply) is logged beside it to show a collapse.
    select_by: Literal["bleu2", "reward"] = field(
        default="bleu2",
        metadata={"help": "validation figure that picks best/: bleu2 (default) or reward"},
    )
