"""``python -m resnet_fast``: the ``resnet-fast`` command."""

import sys

from .cli.main import main

sys.exit(main())
