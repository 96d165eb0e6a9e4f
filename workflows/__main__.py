"""`python3 -m sparsebench.workflows <cmd>` == `sparsebench <cmd>`."""
import sys

from .cli import main

sys.exit(main())
