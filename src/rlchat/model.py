"""LSTM encoder-decoder with Luong attention.

Luong, Pham & Manning, "Effective Approaches to Attention-based Neural Machine Translation",
2015, https://arxiv.org/abs/1508.04025. Built bottom-up: attention, encoder, decoder, Seq2Seq.

Shapes: B batch, S source length, T target length, H hidden size, E embedding size,
V vocabulary size, N number of real (non-padding) target tokens in a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rlchat.config import ModelConfig
from rlchat.tokenizer import PAD_ID


@contextlib.contextmanager
def dropout_disabled(model: nn.Module) -> Iterator[None]:
    """Training mode with every dropout probability at 0; the model's state comes back on exit.

    RL scores its samples with gradient under the policy that drew them, so without dropout;
    eval mode would do that on CPU, but cuDNN's LSTM backward runs only in training mode.
    """
    dropouts = [(m, m.p) for m in model.modules() if isinstance(m, nn.Dropout)]
    rnns = [(m, m.dropout) for m in model.modules() if isinstance(m, nn.RNNBase)]
    was_training = model.training
    try:
        for module, _ in dropouts:
            module.p = 0.0
        for module, _ in rnns:
            module.dropout = 0.0
        model.train()
        yield
    finally:
        for module, p in dropouts:
            module.p = p
        for module, p in rnns:
            module.dropout = p
        model.train(was_training)


class LuongAttention(nn.Module):
    """score(h_t, h_s) of Luong et al. eq. 8: dot, general or concat."""

    def __init__(self, hidden_size: int, score: str) -> None:
        super().__init__()
        self.score = score
        if score == "general":
            self.W_a = nn.Linear(hidden_size, hidden_size, bias=False)
        elif score == "concat":
            self.W_a = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.v_a = nn.Linear(hidden_size, 1, bias=False)
        elif score != "dot":
            raise ValueError(f"unknown attention score {score!r}; use dot, general or concat")

    def forward(
        self, query: Tensor, memory: Tensor, memory_mask: Tensor, query_mask: Tensor | None = None
    ) -> Tensor:
        """Context vectors for every query.

        query (B, T, H), memory (B, S, H), memory_mask (B, S) true on real tokens -> (B, T, H).
        With ``query_mask`` (B, T) the "general" projection is computed at its true positions
        only (the others' contexts are then meaningless).
        """
        if self.score == "dot":
            scores = torch.bmm(query, memory.transpose(1, 2))  # (B, T, S)
        elif self.score == "general":
            # h_t^T W_a h_s computed as (W_a^T h_t)^T h_s: one projection of the T queries.
            if query_mask is None:
                projected = query @ self.W_a.weight
            else:
                projected = torch.zeros_like(query).masked_scatter(
                    query_mask.unsqueeze(-1), query[query_mask] @ self.W_a.weight
                )
            scores = torch.bmm(projected, memory.transpose(1, 2))  # (B, T, S)
        else:
            B, T, H = query.shape
            S = memory.size(1)
            pairs = torch.cat(
                [query.unsqueeze(2).expand(B, T, S, H), memory.unsqueeze(1).expand(B, T, S, H)],
                dim=-1,
            )  # (B, T, S, 2H)
            scores = self.v_a(torch.tanh(self.W_a(pairs))).squeeze(-1)  # (B, T, S)
        scores = scores.masked_fill(~memory_mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T, S)
        return torch.bmm(weights, memory)  # (B, T, H)


@dataclass
class EncoderOutput:
    memory: Tensor  # (B, S, H)
    memory_mask: Tensor  # (B, S) bool
    hidden: tuple[Tensor, Tensor]  # (layers, B, H) each


@dataclass
class DecoderState:
    """Everything one decoding step needs; reorderable for beams and repeated samples."""

    memory: Tensor  # (B, S, H)
    memory_mask: Tensor  # (B, S)
    hidden: tuple[Tensor, Tensor]  # (layers, B, H)
    feed: Tensor | None  # (B, H) previous attentional vector when input feeding

    def index_select(self, index: Tensor) -> DecoderState:
        """Rows ``index`` of every tensor: reorders beams, repeats inputs for K samples."""
        return DecoderState(
            memory=self.memory.index_select(0, index),
            memory_mask=self.memory_mask.index_select(0, index),
            hidden=(self.hidden[0].index_select(1, index), self.hidden[1].index_select(1, index)),
            feed=None if self.feed is None else self.feed.index_select(0, index),
        )


def packed_lstm(
    lstm: nn.LSTM,
    x: Tensor,
    lengths: Tensor,
    hidden: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """A batch-first LSTM over the first ``lengths`` (B,) positions of each row of x (B, T, In)
    only: outputs (B, T, H), zero on the padding, and the final state of each row."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, final = lstm(packed, hidden)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.size(1))
    return outputs, final


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = embedding
        self.bidirectional = config.bidirectional
        directions = 2 if config.bidirectional else 1
        if config.hidden_size % directions:
            raise ValueError("hidden_size must be even for a bidirectional encoder")
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size // directions,
            num_layers=config.layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src (B, S) padded ids, src_lengths (B,) on CPU or device."""
        embedded = self.dropout(self.embedding(src))  # (B, S, E)
        # Packing keeps padding out of the recurrence: a batch equals its examples run alone.
        memory, (h, c) = packed_lstm(self.lstm, embedded, src_lengths)
        if self.bidirectional:
            # (2 * layers, B, H/2) -> (layers, B, H): join the two directions of each layer.
            h = torch.cat([h[0::2], h[1::2]], dim=-1)
            c = torch.cat([c[0::2], c[1::2]], dim=-1)
        return EncoderOutput(memory=memory, memory_mask=src != PAD_ID, hidden=(h, c))


def column_major(weight: Tensor) -> Tensor:
    """The same (out, in) matrix, stored transposed: `F.linear` then multiplies by a
    contiguous (in, out) matrix."""
    return weight.t().contiguous().t()


class StepWeights:
    """Column-major copies of the weights one decoding step multiplies by, for decoding
    without gradient on a CPU.

    With 5-10 rows (MMI's candidates, beams) the CPU's matrix product of a row-major (out, in)
    weight took 2-2.6x as long as of the same weight stored column-major (the output layer,
    10 x 256 by 256 x 8,000: 1.21 ms against 0.47 ms; the LSTM cell 0.88 against 0.45 ms, one
    thread); at one row they are level, at 64 rows 20% apart, at 320 level again. The copies
    are rebuilt whenever a weight changes (an optimiser step, a load), so they never go stale.
    They are made only for weights used `reuses_before_copying` times unchanged: training
    decodes a batch (some 20 steps) and then changes every weight, and copying at each
    step cost SCST more than the copies saved it (0.327 of CE's speed against 0.335).
    """

    enabled = True  # False: decode with the parameters themselves (benchmarks compare both)
    reuses_before_copying = 100

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.uses = 0
        self.copies: dict[str, Tensor] | None = None

    def of(self, weights: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """The copies of `weights` (by name), or None while they are too new to copy."""
        key = tuple((w.data_ptr(), w._version, w.dtype) for w in weights.values())
        if key != self.key:
            self.key, self.uses, self.copies = key, 0, None
        self.uses += 1
        if self.copies is None and self.uses >= self.reuses_before_copying:
            self.copies = {name: column_major(w.detach()) for name, w in weights.items()}
        return self.copies


class Decoder(nn.Module):
    # False: the teacher-forced pass computes the padding too (benchmarks compare both).
    skip_padding = True

    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.step_weights = StepWeights()
        self.embedding = embedding
        self.input_feeding = config.input_feeding
        H = config.hidden_size
        self.lstm = nn.LSTM(
            config.embedding_dim + (H if config.input_feeding else 0),
            H,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.attention = LuongAttention(H, config.attention)
        self.W_c = nn.Linear(2 * H, H, bias=False)  # eq. 5: h~_t = tanh(W_c [c_t; h_t])
        self.dropout = nn.Dropout(config.dropout)
        if config.tie_embeddings:
            self.to_embedding = nn.Linear(H, config.embedding_dim, bias=False)
            self.out = nn.Linear(config.embedding_dim, config.vocab_size)
            self.out.weight = embedding.weight
        else:
            self.to_embedding = None
            self.out = nn.Linear(H, config.vocab_size)

    def attend(
        self,
        outputs: Tensor,
        state: DecoderState,
        weights: dict[str, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Attentional vectors h~ for decoder outputs (B, T, H) -> (B, T, H); with ``mask``
        (B, T), at its true positions only, row-major -> (N, H), the projections skipping
        the padding."""
        context = self.attention(outputs, state.memory, state.memory_mask, query_mask=mask)
        if mask is not None:
            context, outputs = context[mask], outputs[mask]
        W_c = self.W_c.weight if weights is None else weights["W_c"]
        return torch.tanh(F.linear(torch.cat([context, outputs], dim=-1), W_c))

    def logits(self, attentional: Tensor, weights: dict[str, Tensor] | None = None) -> Tensor:
        """Output layer: (..., H) -> (..., V)."""
        x = self.dropout(attentional)
        if self.to_embedding is not None:
            to_embedding = self.to_embedding.weight if weights is None else weights["to_embedding"]
            x = F.linear(x, to_embedding)
        out = self.out.weight if weights is None else weights["out"]
        return F.linear(x, out, self.out.bias)

    def step_matrices(self) -> dict[str, Tensor]:
        """The weights `step` multiplies by, by name."""
        matrices = {"W_c": self.W_c.weight, "out": self.out.weight}
        if self.to_embedding is not None:
            matrices["to_embedding"] = self.to_embedding.weight
        for layer in range(self.lstm.num_layers):
            for kind in ("ih", "hh"):
                name = f"weight_{kind}_l{layer}"
                matrices[name] = getattr(self.lstm, name)
        return matrices

    def inference_weights(self) -> dict[str, Tensor] | None:
        """`StepWeights` when multiplying without gradient on a CPU with weights that stay
        put, else None (the parameters)."""
        on_cpu = self.out.weight.device.type == "cpu"
        if not (StepWeights.enabled and on_cpu) or torch.is_grad_enabled():
            return None
        return self.step_weights.of(self.step_matrices())

    def step(
        self, tokens: Tensor, state: DecoderState, weights: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, DecoderState]:
        """One decoding step for a batch: tokens (B,) -> attentional (B, H), next state;
        ``weights`` from `inference_weights` (None: the parameters)."""
        x = self.dropout(self.embedding(tokens))  # (B, E)
        if self.input_feeding:
            x = torch.cat([x, state.feed], dim=-1)  # (B, E + H)
        output, hidden = self.lstm_step(x, state.hidden, weights)  # (B, H)
        attentional = self.attend(output.unsqueeze(1), state, weights).squeeze(1)  # (B, H)
        next_state = DecoderState(
            memory=state.memory,
            memory_mask=state.memory_mask,
            hidden=hidden,
            feed=attentional if self.input_feeding else None,
        )
        return attentional, next_state

    def lstm_step(
        self,
        x: Tensor,
        hidden: tuple[Tensor, Tensor],
        weights: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One time step of the decoder LSTM with its own weights: x (B, In) -> (B, H).

        A per-layer ``lstm_cell`` is several times faster on a CPU than ``nn.LSTM`` called on a
        length-1 sequence (whose oneDNN set-up dominates a single step), and is exact.
        """
        h, c = hidden  # (layers, B, H) each
        new_h, new_c = [], []
        for layer in range(self.lstm.num_layers):
            if layer > 0:
                x = F.dropout(x, self.lstm.dropout, self.training)
            w_ih, w_hh = (
                getattr(self.lstm, name) if weights is None else weights[name]
                for name in (f"weight_ih_l{layer}", f"weight_hh_l{layer}")
            )
            h_l, c_l = torch.lstm_cell(
                x,
                (h[layer], c[layer]),
                w_ih,
                w_hh,
                getattr(self.lstm, f"bias_ih_l{layer}"),
                getattr(self.lstm, f"bias_hh_l{layer}"),
            )
            new_h.append(h_l)
            new_c.append(c_l)
            x = h_l
        return x, (torch.stack(new_h), torch.stack(new_c))

    def teacher_forced(
        self,
        tgt_in: Tensor,
        tgt_mask: Tensor,
        state: DecoderState,
        weights: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """The whole target at once (no input feeding): tgt_in (B, T), tgt_mask (B, T) true
        on each row's leading real positions -> attentional (N, H) at those, row-major.

        One LSTM call over all T steps is far faster than T calls; it is exact because
        padding sits after the real tokens and the recurrence only looks back. The LSTM runs
        on packed rows and the projections at the real positions only: RL's samples are
        padded to the longest of a hundred or more (8 target tokens on average, 21 padded),
        so most positions of the padded pass were padding.
        """
        x = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        if not Decoder.skip_padding:
            outputs, _ = self.lstm(x, state.hidden)  # (B, T, H)
            return self.attend(outputs, state, weights)[tgt_mask]
        lengths = tgt_mask.sum(1).clamp(min=1)  # an empty row runs one masked step
        outputs, _ = packed_lstm(self.lstm, x, lengths, state.hidden)  # (B, T, H)
        return self.attend(outputs, state, weights, mask=tgt_mask)  # (N, H)


class Seq2Seq(nn.Module):
    """Encoder -> Luong-attention decoder; the model rebuilds from its config alone."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.encoder = Encoder(config, embedding)
        self.decoder = Decoder(config, embedding)

    def start(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Encode a batch and return the decoder's initial state."""
        encoded = self.encoder(src, src_lengths)
        B, H = src.size(0), self.config.hidden_size
        feed = encoded.memory.new_zeros(B, H) if self.config.input_feeding else None
        return DecoderState(
            memory=encoded.memory,
            memory_mask=encoded.memory_mask,
            hidden=encoded.hidden,
            feed=feed,
        )

    def step_log_probs(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Log-probabilities of the next token: tokens (B,) -> (B, V), next state."""
        weights = self.decoder.inference_weights()
        attentional, state = self.decoder.step(tokens, state, weights)
        logits = self.decoder.logits(attentional, weights)
        return torch.log_softmax(logits.float(), dim=-1), state

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        tgt_mask: Tensor,
        teacher_forcing: float = 1.0,
        generator: torch.Generator | None = None,
        repeat: int = 1,
        also: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits at the real target positions only.

        src (B, S), src_lengths (B,), tgt_in (B * repeat, T) starting with <bos>, tgt_mask
        (B * repeat, T) true on real positions -> logits (N, V) in row-major order of
        ``tgt_mask``. Skipping the padding before the output layer saves the largest matmul
        of training. ``repeat`` scores several targets per input (RL's K samples, input-major)
        from one encoder pass. ``also`` = (tgt_in (B, T'), tgt_mask (B, T')): one more target
        per input scored from the same pass (RL's references); then both logits are returned.
        """
        state = self.start(src, src_lengths)
        if also is not None:
            return (
                self.forward_from(state, tgt_in, tgt_mask, repeat),
                self.target_logits(state, *also),
            )
        return self.forward_from(state, tgt_in, tgt_mask, repeat, teacher_forcing, generator)

    def forward_from(
        self,
        state: DecoderState,
        tgt_in: Tensor,
        tgt_mask: Tensor,
        repeat: int = 1,
        teacher_forcing: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """`forward` from an encoded state."""
        if repeat > 1:
            rows = torch.arange(state.memory.size(0), device=state.memory.device)
            state = state.index_select(rows.repeat_interleave(repeat))
        if teacher_forcing >= 1.0:
            return self.target_logits(state, tgt_in, tgt_mask)
        return self._stepwise_logits(tgt_in, tgt_mask, state, teacher_forcing, generator)

    def target_logits(self, state: DecoderState, tgt_in: Tensor, tgt_mask: Tensor) -> Tensor:
        """Teacher-forced logits (N, V) from an encoded state; lets callers encode once and
        score several targets per input (the K samples of RL)."""
        if self.config.input_feeding:
            return self._stepwise_logits(tgt_in, tgt_mask, state, 1.0, None)
        weights = self.decoder.inference_weights()
        attentional = self.decoder.teacher_forced(tgt_in, tgt_mask, state, weights)  # (N, H)
        return self.decoder.logits(attentional, weights)  # (N, V)

    def _stepwise_logits(
        self,
        tgt_in: Tensor,
        tgt_mask: Tensor,
        state: DecoderState,
        teacher_forcing: float,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Step-by-step decoder for input feeding and scheduled sampling (Bengio et al. 2015)."""
        B, T = tgt_in.shape
        tokens = tgt_in[:, 0]
        all_logits = []
        for t in range(T):
            weights = self.decoder.inference_weights()
            attentional, state = self.decoder.step(tokens, state, weights)
            logits = self.decoder.logits(attentional, weights)  # (B, V)
            all_logits.append(logits)
            if t + 1 < T:
                gold = tgt_in[:, t + 1]
                if teacher_forcing < 1.0:
                    # Scheduled sampling: feed the model's own previous prediction with
                    # probability 1 - ratio, per example and step.
                    coin = torch.rand(B, generator=generator, device=gold.device)
                    tokens = torch.where(coin < teacher_forcing, gold, logits.argmax(-1))
                else:
                    tokens = gold
        return torch.stack(all_logits, dim=1)[tgt_mask]  # (N, V)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
