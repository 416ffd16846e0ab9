"""A process that takes one company's token lock in the vault and holds it, for the tests of a
paused holder: prints ``held`` once it holds the lock, then holds it for ``seconds`` and prints
``released`` (a paused process prints nothing until it is resumed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from daemon.fleet.vault import TokenVault, load_keys
from daemon.store.engine import make_engine


def main() -> None:
    url, folder, company = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    seconds, idle = float(sys.argv[4]), float(sys.argv[5])
    vault = TokenVault(make_engine(url), load_keys(folder, env={}), lock_idle_seconds=idle)
    with vault.company_lock(company):
        sys.stdout.write("held\n")
        sys.stdout.flush()
        time.sleep(seconds)  # a Next Engine call
    sys.stdout.write("released\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
