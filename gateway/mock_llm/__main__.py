"""`python -m gateway.mock_llm mock-llm ...` runs the mock without the rest of the CLI."""

import sys

from gateway.mock_llm import main

sys.exit(main())
