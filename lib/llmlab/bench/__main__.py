"""``python -m llmlab.bench``: see :mod:`llmlab.bench`."""

from . import main

raise SystemExit(main())
