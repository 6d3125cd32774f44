"""``python -m gift_lite reproduce --preset {smoke,mini,gpu}``."""

import sys

from gift_lite.reproduce import main

sys.exit(main())
