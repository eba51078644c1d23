#!/usr/bin/env python3
"""Writes the golden files of tests/golden.rs: the chapter's models in PyTorch, one
training step each, with everything tsumugi must reproduce.

Run by hand when a model changes (CI runs only the Rust side), from the repository root:

    pip install torch safetensors numpy      # the CPU wheel from PyPI is enough
    python tests/golden/make_golden.py       # rewrites tests/golden/*.safetensors

Each file holds, for one model built with a fixed seed (float32, CPU, deterministic):
    param.<state-dict name>   the weights before the step (what tsumugi loads)
    input.<name>              the inputs (token ids as I64, float inputs, lengths, targets)
    output.<name>             forward results: logits, final states, encoder outputs, ...
    loss                      the loss, [1]
    grad.<state-dict name>    every parameter's gradient after backward
    adam.<state-dict name>    every parameter after one torch.optim.Adam step (lr below)
and one metadata entry, "golden": "lr=<lr>; torch=<version>; <the case>" (one entry, so
that a rerun with the same torch writes the same bytes).
Dropout is 0, or the module is in eval mode (backward still runs), since the two
libraries' random streams differ. Dimensions are small so the files stay small.

The models are the chapter's classes as written there: SimpleRNN, CharRNN,
SentimentLSTM (2 layers), TextClassifierGRU, Encoder/Decoder/Seq2Seq,
BahdanauAttention/AttentionDecoder/Seq2SeqWithAttention (teacher forcing ratio 1.0), and
CharLevelRNN (2 layers); plus a 2-layer bidirectional LSTM and GRU classifier over
per-row lengths through pack_padded_sequence.
"""

import os
import random

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
LR = 0.01
PAD, SOS, EOS = 0, 1, 2

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------- the chapter's models


class SimpleRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        out, hidden = self.rnn(x)
        return self.fc(out[:, -1, :]), out, hidden


class CharRNN(nn.Module):
    def __init__(self, vocab_size, embed_size, hidden_size):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.RNN(embed_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, hidden=None):
        out, hidden = self.rnn(self.embedding(x), hidden)
        return self.fc(out), hidden


class SentimentLSTM(nn.Module):
    def __init__(self, vocab_size, embedding_dim, hidden_dim, output_dim, n_layers=2, dropout=0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, text):
        embedded = self.embedding(text)
        output, (hidden, cell) = self.lstm(embedded)
        last = self.dropout(hidden[-1])
        return self.fc(last), hidden, cell


class TextClassifierGRU(nn.Module):
    def __init__(self, vocab_size, embedding_dim, hidden_dim, output_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, text):
        embedded = self.embedding(text)
        output, hidden = self.gru(embedded)
        return self.fc(hidden[-1]), hidden


class Encoder(nn.Module):
    def __init__(self, input_dim, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(input_dim, emb_dim)
        self.lstm = nn.LSTM(emb_dim, hidden_dim, batch_first=True)

    def forward(self, src):
        embedded = self.embedding(src)
        outputs, (hidden, cell) = self.lstm(embedded)
        return outputs, hidden, cell


class Decoder(nn.Module):
    def __init__(self, output_dim, emb_dim, hidden_dim):
        super().__init__()
        self.output_dim = output_dim
        self.embedding = nn.Embedding(output_dim, emb_dim)
        self.lstm = nn.LSTM(emb_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, input, hidden, cell, encoder_outputs=None):
        input = input.unsqueeze(1)
        embedded = self.embedding(input)
        output, (hidden, cell) = self.lstm(embedded, (hidden, cell))
        prediction = self.fc(output.squeeze(1))
        return prediction, hidden, cell, None


class BahdanauAttention(nn.Module):
    def __init__(self, hidden_dim):
        super().__init__()
        self.W1 = nn.Linear(hidden_dim, hidden_dim)
        self.W2 = nn.Linear(hidden_dim, hidden_dim)
        self.V = nn.Linear(hidden_dim, 1)

    def forward(self, query, values):
        # query [B, H], values [B, S, H]
        query = query.unsqueeze(1)
        score = self.V(torch.tanh(self.W1(query) + self.W2(values)))
        attention_weights = torch.softmax(score, dim=1)
        context = torch.sum(attention_weights * values, dim=1)
        return context, attention_weights.squeeze(2)


class AttentionDecoder(nn.Module):
    def __init__(self, output_dim, emb_dim, hidden_dim):
        super().__init__()
        self.output_dim = output_dim
        self.embedding = nn.Embedding(output_dim, emb_dim)
        self.attention = BahdanauAttention(hidden_dim)
        self.lstm = nn.LSTM(emb_dim + hidden_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, input, hidden, cell, encoder_outputs):
        input = input.unsqueeze(1)
        embedded = self.embedding(input)
        context, attention_weights = self.attention(hidden[-1], encoder_outputs)
        rnn_input = torch.cat([embedded, context.unsqueeze(1)], dim=2)
        output, (hidden, cell) = self.lstm(rnn_input, (hidden, cell))
        prediction = self.fc(output.squeeze(1))
        return prediction, hidden, cell, attention_weights


class Seq2Seq(nn.Module):
    """The chapter's Seq2Seq and Seq2SeqWithAttention (the decoder decides which)."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, src, trg, teacher_forcing_ratio=0.5):
        batch_size, trg_len = trg.shape
        outputs = torch.zeros(batch_size, trg_len, self.decoder.output_dim)
        encoder_outputs, hidden, cell = self.encoder(src)
        input = trg[:, 0]
        weights = []
        for t in range(1, trg_len):
            output, hidden, cell, attention = self.decoder(input, hidden, cell, encoder_outputs)
            outputs[:, t] = output
            if attention is not None:
                weights.append(attention)
            teacher_force = random.random() < teacher_forcing_ratio
            top1 = output.argmax(1)
            input = trg[:, t] if teacher_force else top1
        return outputs, (encoder_outputs, hidden, cell, weights)


class CharLevelRNN(nn.Module):
    def __init__(self, vocab_size, embedding_dim, hidden_dim, n_layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, batch_first=True)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    def forward(self, x, hidden=None):
        output, hidden = self.lstm(self.embedding(x), hidden)
        return self.fc(output), hidden


class BidirectionalClassifier(nn.Module):
    """Not in the chapter: a 2-layer bidirectional LSTM/GRU over per-row lengths, the
    classifier of issue #4; the last layer's two final states feed fc."""

    def __init__(self, cell, vocab_size, embedding_dim, hidden_dim, output_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.rnn = cell(embedding_dim, hidden_dim, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden_dim, output_dim)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        output, state = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=ids.shape[1])
        hidden = state[0] if isinstance(state, tuple) else state
        logits = self.fc(torch.cat([hidden[-2], hidden[-1]], dim=1))
        return logits, output, state


# ---------------------------------------------------------------- writing a case


def ids(generator, shape, low, high):
    return torch.randint(low, high, shape, generator=generator, dtype=torch.int64)


def write_case(name, description, model, inputs, run, zero_grads=()):
    """One step of `model`: `run()` returns (loss, outputs dict). `zero_grads` names
    parameters whose gradient is zero in exact arithmetic and set to exactly zero before
    the Adam step (see the Bahdanau case)."""
    tensors = {f"param.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    tensors.update({f"input.{k}": v.detach().clone() for k, v in inputs.items()})
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    optimizer.zero_grad()
    loss, outputs = run()
    loss.backward()
    tensors.update({f"output.{k}": v.detach().clone() for k, v in outputs.items()})
    tensors["loss"] = loss.detach().reshape(1).clone()
    for k, p in model.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        tensors[f"grad.{k}"] = grad.detach().clone()
        if k in zero_grads:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    tensors.update({f"adam.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {"golden": f"lr={LR}; torch={torch.__version__}; {description}"}
    path = os.path.join(HERE, f"{name}.safetensors")
    save_file(tensors, path, metadata=metadata)
    size = os.path.getsize(path)
    print(f"{name}: {len(tensors)} tensors, {size} bytes, loss {loss.item():.6f}")
    return size


def main():
    total = 0
    g = torch.Generator().manual_seed(1234)
    cross_entropy = nn.CrossEntropyLoss()

    # SimpleRNN(input_size=3, hidden_size=5, output_size=2): fc on the last step's output.
    torch.manual_seed(1)
    model = SimpleRNN(3, 5, 2)
    x = torch.randn(3, 4, 3, generator=g)
    y = ids(g, (3,), 0, 2)

    def run():
        logits, out, hidden = model(x)
        return cross_entropy(logits, y), {"logits": logits, "rnn_output": out, "h_n": hidden[0]}

    total += write_case("simple_rnn", "SimpleRNN(3, 5, 2), x [3, 4, 3]", model, {"x": x, "targets": y}, run)

    # CharRNN(vocab_size=8, embed_size=6, hidden_size=10): next-character logits per step.
    torch.manual_seed(2)
    model = CharRNN(8, 6, 10)
    text = ids(g, (2, 7), 0, 8)
    x, y = text[:, :-1], text[:, 1:]

    def run():
        logits, hidden = model(x)
        logits = logits.reshape(-1, 8)
        return cross_entropy(logits, y.reshape(-1)), {"logits": logits, "h_n": hidden[0]}

    total += write_case(
        "char_rnn", "CharRNN(8, 6, 10), ids [2, 6]", model, {"ids": x.contiguous(), "targets": y.reshape(-1)}, run
    )

    # SentimentLSTM(vocab_size=12, embedding_dim=6, hidden_dim=8, output_dim=2,
    # n_layers=2, dropout=0.5), in eval mode: dropout is the identity, backward still runs.
    torch.manual_seed(3)
    model = SentimentLSTM(12, 6, 8, 2, n_layers=2, dropout=0.5).eval()
    x = ids(g, (4, 5), 1, 12)
    x[1, 3:] = PAD
    x[3, 4:] = PAD
    y = ids(g, (4,), 0, 2)

    def run():
        logits, hidden, cell = model(x)
        return cross_entropy(logits, y), {"logits": logits, "h_n": hidden, "c_n": cell}

    total += write_case(
        "sentiment_lstm",
        "SentimentLSTM(12, 6, 8, 2, n_layers=2, dropout=0.5) in eval mode, ids [4, 5]",
        model,
        {"ids": x, "targets": y},
        run,
    )

    # TextClassifierGRU(vocab_size=12, embedding_dim=6, hidden_dim=8, output_dim=3).
    torch.manual_seed(4)
    model = TextClassifierGRU(12, 6, 8, 3)
    x = ids(g, (4, 5), 0, 12)
    y = ids(g, (4,), 0, 3)

    def run():
        logits, hidden = model(x)
        return cross_entropy(logits, y), {"logits": logits, "h_n": hidden[0]}

    total += write_case(
        "text_classifier_gru", "TextClassifierGRU(12, 6, 8, 3), ids [4, 5]", model, {"ids": x, "targets": y}, run
    )

    # Seq2Seq(Encoder(9, 6, 8), Decoder(10, 6, 8)) and Seq2SeqWithAttention(Encoder(13, 8,
    # 16), AttentionDecoder(12, 8, 16)): teacher forcing ratio 1.0, loss on steps 1.. with
    # ignore_index=<pad>, as the chapter's training loop.
    for name, seed, (src_vocab, tgt_vocab, emb, hidden), decoder in [
        ("seq2seq", 5, (9, 10, 6, 8), Decoder),
        ("seq2seq_attention", 6, (13, 12, 8, 16), AttentionDecoder),
    ]:
        torch.manual_seed(seed)
        model = Seq2Seq(Encoder(src_vocab, emb, hidden), decoder(tgt_vocab, emb, hidden))
        src = ids(g, (3, 5), 3, src_vocab)
        src[2, 4:] = PAD
        trg = ids(g, (3, 6), 3, tgt_vocab)
        trg[:, 0] = SOS
        trg[0, 5] = EOS
        trg[1, 3], trg[1, 4:] = EOS, PAD
        trg[2, 4], trg[2, 5:] = EOS, PAD
        criterion = nn.CrossEntropyLoss(ignore_index=PAD)
        random.seed(0)

        def run():
            outputs, (enc_out, h, c, weights) = model(src, trg, teacher_forcing_ratio=1.0)
            logits = outputs[:, 1:].reshape(-1, tgt_vocab)
            loss = criterion(logits, trg[:, 1:].reshape(-1))
            out = {
                "logits": logits,
                "encoder_outputs": enc_out,
                "decoder_h": h[0],
                "decoder_c": c[0],
            }
            if weights:
                out["attention"] = torch.stack(weights)  # [T-1, B, S]
            return loss, out

        description = (
            f"Seq2Seq{'WithAttention' if decoder is AttentionDecoder else ''}"
            f"(Encoder({src_vocab}, {emb}, {hidden}), {decoder.__name__}({tgt_vocab}, {emb}, {hidden})),"
            " src [3, 5], trg [3, 6], teacher forcing 1.0"
        )
        # V.bias shifts every score equally, so softmax cancels it: its gradient is zero
        # in exact arithmetic (PyTorch's float residue is ~1e-9, and tsumugi computes
        # none). Adam's first step moves a parameter by about lr * g / (|g| + eps) for
        # any g, residue included, so the residue is zeroed before the step.
        zero = ("decoder.attention.V.bias",) if decoder is AttentionDecoder else ()
        total += write_case(name, description, model, {"src": src, "trg": trg}, run, zero_grads=zero)

    # CharLevelRNN(vocab_size=9, embedding_dim=6, hidden_dim=8, n_layers=2).
    torch.manual_seed(7)
    model = CharLevelRNN(9, 6, 8, n_layers=2)
    text = ids(g, (2, 8), 0, 9)
    x, y = text[:, :-1].contiguous(), text[:, 1:].reshape(-1)

    def run():
        logits, (h, c) = model(x)
        logits = logits.reshape(-1, 9)
        return cross_entropy(logits, y), {"logits": logits, "h_n": h, "c_n": c}

    total += write_case("char_level_rnn", "CharLevelRNN(9, 6, 8, n_layers=2), ids [2, 7]", model, {"ids": x, "targets": y}, run)

    # 2-layer bidirectional LSTM and GRU classifiers over per-row lengths (one row of
    # length 1, one of full length), <pad> = 0 as padding_idx.
    for name, seed, cell in [("bilstm_lengths", 8, nn.LSTM), ("bigru_lengths", 9, nn.GRU)]:
        torch.manual_seed(seed)
        model = BidirectionalClassifier(cell, 10, 5, 6, 3)
        lengths = torch.tensor([5, 1, 4, 3], dtype=torch.int64)
        x = ids(g, (4, 5), 1, 10)
        for row, length in enumerate(lengths.tolist()):
            x[row, length:] = PAD
        y = ids(g, (4,), 0, 3)

        def run():
            logits, output, state = model(x, lengths)
            out = {"logits": logits, "output": output}
            if isinstance(state, tuple):
                out["h_n"], out["c_n"] = state
            else:
                out["h_n"] = state
            return cross_entropy(logits, y), out

        description = f"2-layer bidirectional {cell.__name__}(5, 6) classifier, ids [4, 5], lengths [5, 1, 4, 3]"
        total += write_case(name, description, model, {"ids": x, "lengths": lengths, "targets": y}, run)

    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
