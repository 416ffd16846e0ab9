"""A plugin whose import never returns; it touches ``$NBFAKE_HANG_MARK`` once it hangs."""

import os
import time
from pathlib import Path

Path(os.environ["NBFAKE_HANG_MARK"]).touch()
while True:
    time.sleep(0.05)
