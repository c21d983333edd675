"""``python -m resnet_fast``: the ``resnet-fast`` command."""

import sys

from .bench.cli import main

sys.exit(main())
