"""Allow ``python -m logstore``."""

from logstore.cli import main

raise SystemExit(main())
