"""``python -m gateway.identity``: the identity commands on their own."""

import sys

from gateway.identity.commands import main

sys.exit(main())
