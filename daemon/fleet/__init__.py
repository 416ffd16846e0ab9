"""Fleet mode (issue #19): many companies served by many workers on one PostgreSQL.

- :mod:`daemon.fleet.companies` — one company per file in ``companies_dir``; reload on SIGHUP.
- :mod:`daemon.fleet.leases` — per-company leases, fair share, takeover and fencing.
- :mod:`daemon.fleet.vault` — each company's Next Engine token pair, encrypted in the database.

docs/fleet.md describes the design and what is not wired into ``nebridge run`` yet.
"""
