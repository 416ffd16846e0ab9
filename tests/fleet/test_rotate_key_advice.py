"""`companies rotate-key` advises by the keys it finds: at step 1 of a rotation (the new key
installed as nebridge-vault-key-previous, sealing nothing yet) it says to keep that key and
swap next, not to remove it; after the re-seal, to remove the old one (review fleet F8).
Real CLI, vault and Next Engine sandbox on the CI PostgreSQL."""

from __future__ import annotations

import shutil

from daemon.fleet.vault import KEY_CREDENTIAL, PREVIOUS_KEY_CREDENTIAL
from tests.fleet.test_fleet_cli import Fleet, connect, new_key
from tests.fleet.test_fleet_cli import fleet as fleet  # the fixture


def test_rotate_key_at_step_1_keeps_the_new_key_and_after_the_reseal_drops_the_old(
    fleet: Fleet,
) -> None:
    assert connect(fleet, "acme").exit_code == 0
    current = fleet.credentials / KEY_CREDENTIAL
    previous = fleet.credentials / PREVIOUS_KEY_CREDENTIAL
    new_key(previous)  # step 1: the new key, as the previous one

    step1 = fleet.cli("companies", "rotate-key")
    assert step1.exit_code == 0, step1.output
    assert "0 token pair(s) sealed again" in step1.stdout
    assert "keep it — step 2, the swap, is next" in step1.stdout
    assert not step1.stdout.strip().splitlines()[-1].startswith("no pair is sealed")

    old = fleet.credentials / "old"  # step 2: swap
    shutil.copy2(current, old)
    shutil.copy2(previous, current)
    shutil.copy2(old, previous)
    old.unlink()
    step3 = fleet.cli("companies", "rotate-key")
    assert step3.exit_code == 0, step3.output
    assert "1 token pair(s) sealed again" in step3.stdout
    assert "no pair is sealed with an old key any more: remove " in step3.stdout
    assert "step 2" not in step3.stdout

    previous.unlink()  # step 4
    done = fleet.cli("companies", "rotate-key")
    assert done.exit_code == 0 and "nothing to rotate" in done.stdout, done.output
