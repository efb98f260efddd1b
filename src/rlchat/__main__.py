"""`python -m rlchat ...`, which is also how torchrun starts it: `torchrun -m rlchat train ce`."""

from rlchat.cli import app

app(prog_name="rlchat")
