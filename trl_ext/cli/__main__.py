"""``python -m trl_ext.cli`` == ``trl-ext``."""

from .main import main

raise SystemExit(main())
