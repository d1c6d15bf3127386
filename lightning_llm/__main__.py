"""`python -m lightning_llm <verb>`: see lightning_llm.cli.main."""

from lightning_llm.cli.handler import exit_now
from lightning_llm.cli.main import main

exit_now(main())
