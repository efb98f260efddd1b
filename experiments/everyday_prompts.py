"""Thirty everyday prompts answered by the CE bot, the RL bot and the served bot (RL with MMI
reranking), side by side, written as Markdown (docs/prompts.md).

    python experiments/everyday_prompts.py --out-dir runs/quickstart --md docs/prompts.md

The prompts are chosen by hand to be what people say to a chatbot, not corpus lines; none is
tuned on. Sampled replies (the served bot's candidates) are drawn with a fixed seed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from rlchat.chatbot import Chatbot
from rlchat.checkpoint import atomic_write_text
from rlchat.config import MMI_DECODING, DecodeConfig

PROMPTS = (
    "hi",
    "how are you?",
    "what's your name?",
    "how old are you?",
    "what time is it?",
    "where are you from?",
    "where are you going?",
    "what do you do for a living?",
    "do you want to get some dinner tonight?",
    "can you help me with my homework?",
    "i love you",
    "i'm sorry.",
    "thank you.",
    "are you crazy?",
    "what happened?",
    "who are you?",
    "do you believe in god?",
    "what's your favorite movie?",
    "tell me a joke.",
    "i'm tired.",
    "i lost my job today.",
    "will you marry me?",
    "are you a robot?",
    "what should i do?",
    "where were you last night?",
    "can i borrow your car?",
    "did you see the game?",
    "it's raining again.",
    "i don't feel well.",
    "goodbye",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="a quickstart's directory")
    parser.add_argument("--md", type=Path, help="write the Markdown table here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ce = Chatbot.load(args.out_dir / "ce", device="cpu")
    rl = Chatbot.load(args.out_dir / "rl", device="cpu", backward=args.out_dir / "backward")
    served = replace(DecodeConfig(), **MMI_DECODING)
    columns = {
        "CE (greedy)": ce.reply_batch(list(PROMPTS)),
        "RL (greedy)": rl.reply_batch(list(PROMPTS)),
        "served: RL + MMI": rl.reply_batch(
            list(PROMPTS), config=served, generator=torch.Generator().manual_seed(args.seed)
        ),
    }
    lines = [
        "| prompt | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for i, prompt in enumerate(PROMPTS):
        cells = [prompt, *(replies[i] or "∅" for replies in columns.values())]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.md:
        settings = ", ".join(f"{k}={v}" for k, v in MMI_DECODING.items())
        atomic_write_text(
            args.md,
            "# Thirty everyday prompts\n\n"
            f"Runs: `{args.out_dir}` (CE fine-tuned on the genre, RL from it, the backward "
            f"model for MMI). Served decoding: {settings}, {served.candidates} candidates, "
            f"MMI weight {served.mmi_weight}, length bonus {served.mmi_length}, "
            f"{served.mmi_form} form; seed {args.seed}. Reproduce with "
            f"`python experiments/everyday_prompts.py --out-dir {args.out_dir}`.\n\n"
            f"{table}\n",
        )


if __name__ == "__main__":
    main()
