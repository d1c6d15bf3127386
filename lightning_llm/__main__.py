"""`python -m lightning_llm <verb>`: see lightning_llm.cli.main."""

import sys

from lightning_llm.cli.main import main

sys.exit(main())
