"""`python -m aim_hf train ...`: the same as the `aim-hf` command."""

import sys

from aim_hf.cli import main

sys.exit(main())
