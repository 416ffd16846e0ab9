"""``nebridge config check``: validate daemon.yaml and every plugin's options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daemon.cli.common import fail, get, print_json
from daemon.config import ConfigError, ConfigIssue, LoadedConfig, load_config, read_yaml
from daemon.config_admin import check_config

if TYPE_CHECKING:
    from daemon.fleet.companies import Companies

app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


@app.command("check")
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate daemon.yaml: every key, plugin options (of disabled plugins too), that each
    enabled plugin loads, dependencies and the WMS connector; in fleet mode every company
    file too. Exits 1 on any problem."""
    app_ctx = get(ctx)
    if as_json:  # core problems too as the same JSON (not only a one-line error)
        try:
            load_config(app_ctx.config_path)
        except ConfigError as exc:
            print_json(
                {
                    "config": str(exc.source),
                    "valid": False,
                    "issues": [issue_dict(i) for i in exc.issues],
                    "plugins_failed": [],
                    "warnings": [],
                }
            )
            raise typer.Exit(1) from None
    loaded = app_ctx.load_base()
    found = check_config(loaded)
    issues = found.issues
    companies = None
    if loaded.config.companies_dir is not None:
        companies, inherited = check_companies(loaded)
        issues = [i for i in issues if used_by_a_company(i, inherited)]
    bad_companies = [c for c in companies or [] if c["issues"]]
    if as_json:
        print_json(
            {
                "config": str(loaded.path),
                "valid": not issues and not bad_companies,
                "issues": [issue_dict(i) for i in issues],
                "plugins_failed": [
                    {"name": r.name, "state": r.state.value, "error": r.error}
                    for r in found.host.failed()
                ],
                "warnings": found.warnings,
                **({} if companies is None else {"companies": companies}),
            }
        )
        raise typer.Exit(1 if issues or bad_companies else 0)
    for warning in found.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if issues or bad_companies:
        lines = "\n".join(
            [f"  - {loaded.path}: {i}" for i in issues]
            + [
                f"  - {where(i)}: {i['message']}"
                for company in bad_companies
                for i in company["issues"]
            ]
        )
        fail(
            f"{len(issues) + sum(len(c['issues']) for c in bad_companies)} problem(s):\n"
            f"{lines}\nFix them and run `nebridge config check` again (a company file that "
            "is refused does not stop the others)."
        )
    typer.echo(
        f"{loaded.path}: configuration is valid "
        f"({len(loaded.config.warehouses)} warehouse(s), plugins enabled: "
        f"{', '.join(loaded.config.enabled_plugins()) or 'none'})"
    )
    if companies is not None:
        typer.echo(f"{loaded.config.companies_dir}: {len(companies)} company file(s), all valid")


def where(issue: dict[str, Any]) -> str:
    """``file:line`` of a problem (``file`` when the line is not known), and its key."""
    line = f":{issue['line']}" if issue["line"] else ""
    key = f" ({issue['path']})" if issue["path"] else ""
    return f"{issue['file']}{line}{key}"


#: Sections of daemon.yaml a company file replaces whole: in fleet mode they are only the
#: default of the company files that leave them out.
REPLACED_SECTIONS = ("wms", "warehouses", "plugins")


def used_by_a_company(issue: ConfigIssue, inherited: set[str]) -> bool:
    """False for a problem of daemon.yaml in a section every company file replaces (a fleet's
    daemon.yaml needs no ``wms:`` when each company has its own, as ``run`` accepts)."""
    section = issue.path.split(".", 1)[0]
    return section not in REPLACED_SECTIONS or section in inherited


def inherited_sections(fleet: Companies) -> set[str]:
    """The sections of :data:`REPLACED_SECTIONS` some company file leaves out (takes from
    daemon.yaml), refused files included."""
    inherited: set[str] = set()
    for path in [c.path for c in fleet.companies.values()] + [r.path for r in fleet.refused]:
        try:
            raw = read_yaml(path) if path is not None else {}
        except (ConfigError, OSError):
            continue
        if isinstance(raw, Mapping):
            inherited.update(key for key in REPLACED_SECTIONS if key not in raw)
    return inherited


def check_companies(base: LoadedConfig) -> tuple[list[dict[str, Any]], set[str]]:
    """Every company file of the fleet checked as daemon.yaml is (its keys, then its plugins
    and connector): one entry per file, each problem with its file and line; and the
    sections of :data:`REPLACED_SECTIONS` some company file leaves out (takes from daemon.yaml;
    all of them when the folder cannot be read)."""
    from daemon.fleet.companies import Companies

    try:
        fleet = Companies(base)
    except ConfigError as exc:  # the folder itself cannot be read
        return [
            {
                "company": None,
                "file": str(exc.source),
                "issues": [{"file": str(exc.source), **issue_dict(i)} for i in exc.issues],
            }
        ], set(REPLACED_SECTIONS)
    inherited = inherited_sections(fleet)
    found: list[dict[str, Any]] = []
    for refusal in fleet.refused:
        found.append(
            {
                "company": refusal.path.stem,
                "file": str(refusal.path),
                "issues": [
                    {"file": str(refusal.path), **issue_dict(i)} for i in refusal.error.issues
                ],
            }
        )
    for code, company in fleet.companies.items():
        assert company.path is not None
        checked = check_config(LoadedConfig(company.path, company.config, read_yaml(company.path)))
        found.append(
            {
                "company": code,
                "file": str(company.path),
                "issues": [{"file": str(company.path), **issue_dict(i)} for i in checked.issues],
            }
        )
    return sorted(found, key=lambda entry: entry["file"]), inherited


def issue_dict(issue: ConfigIssue) -> dict[str, object]:
    """JSON view of one configuration problem."""
    return {"path": issue.path, "line": issue.line, "message": issue.message}


@app.command("example")
def example(ctx: typer.Context) -> None:
    """Print the commented example daemon.yaml shipped with nebridge (the demo's), to start an
    installation from: nebridge config example > daemon.yaml"""
    get(ctx)  # refuses --company: the example is daemon.yaml's
    from daemon.cli.demo import EXAMPLE_CONFIG

    typer.echo(EXAMPLE_CONFIG.read_text(encoding="utf-8"), nl=False)
