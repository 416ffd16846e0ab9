"""A process refreshing one company's token pair in the vault, for the single-flight test.

Each round takes the company's lock as the Next Engine client does
(:func:`daemon.nextengine.tokens.company_lock`), reads the pair, "calls Next Engine" (sleeps),
and saves the rotated pair: the access token is a counter, so a refresh that overlapped another
would lose an increment. Prints one JSON line per round: ``[start, end]`` (wall clock).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from daemon.fleet.vault import TokenVault, load_keys
from daemon.nextengine.tokens import company_lock
from daemon.store.engine import make_engine


def main() -> None:
    url, folder, company, rounds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    vault = TokenVault(make_engine(url), load_keys(folder, env={}))
    store = vault.store(company)
    for _ in range(rounds):
        with company_lock(store):
            start = time.time()
            tokens = store.load()
            assert tokens is not None
            time.sleep(0.3)  # the Next Engine call, which rotates the pair
            store.save(replace(tokens, access_token=str(int(tokens.access_token) + 1)))
            end = time.time()
        sys.stdout.write(json.dumps([start, end]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
