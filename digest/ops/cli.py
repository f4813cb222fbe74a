"""The ``digest`` command line: a thin layer over the library, turning errors into exit codes.

Exit status: 0 success (also "nothing new"), 1 the cycle ran but something failed and will be
retried, 2 bad usage, bad settings or a bad rule, with a message naming the offending value.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from digest.clock import today_in, utc_now
from digest.cycle.run import check_as_of, run_once
from digest.errors import CycleLockedError, DigestError, ImportRefused, RuleError, describe_os_error
from digest.matching.explain import describe, summary, try_rule
from digest.matching.rules import parse_rule
from digest.models import LAYOUTS
from digest.ops.demo import DEMO_RULES, choose_day, email_part, extract_html, run_demo
from digest.ops.help import DigestGroup
from digest.ops.logs import configure_logging
from digest.ops.preview import next_digest, render_preview
from digest.ops.progress import send_progress
from digest.ops.signals import announce_stop, stop_on_signals
from digest.ops.startup import check_secrets
from digest.paths import PENDING_FILE, PREVIEW_DIR, STORE_FILE
from digest.settings import (
    Settings,
    check_data_dir,
    in_container,
    load_settings,
    settings_file_description,
)
from digest.state import transfer
from digest.state.backend import is_postgres, open_backend, redacted
from digest.state.files import write_atomically
from digest.state.preferences import Preferences, parse_weekday
from digest.state.store import Store, open_store

app = typer.Typer(
    name="digest",
    help=(
        "Email each subscriber a digest (daily or weekly, at their own hour) of the new papers "
        "that match their own keyword rules."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's shows a type label such as <bool> beside every option
    cls=DigestGroup,
)
out = Console(highlight=False, soft_wrap=True)


def fail(error: DigestError | str, code: int | None = None) -> NoReturn:
    message = str(error)
    print(f"digest: error: {message}", file=sys.stderr)
    raise typer.Exit(code if code is not None else getattr(error, "exit_code", 1))


EARLIEST_DAY = date(2000, 1, 1)  # far enough back for any listing; far from date.min's arithmetic


def parse_day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # fromisoformat also takes 20261206, 2026-W49-7
            raise ValueError(value)
        day = date.fromisoformat(value)
    except ValueError:
        fail(f"--date: expected YYYY-MM-DD, got {value!r}", 2)
    if day < EARLIEST_DAY:
        fail(f"--date {value} is before {EARLIEST_DAY.isoformat()}: no source lists papers that old", 2)
    return day


_verbose = False


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each stage does.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Read settings from FILE (default: config/digest.toml, or DIGEST_CONFIG_FILE). "
            "Relative paths in it are relative to the working directory.",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    global _verbose
    _verbose = verbose
    configure_logging("keyvalue", logging.INFO if verbose else logging.WARNING)
    if config is not None:
        if not config.is_file():
            fail(f"--config {config}: no such file", 2)
        os.environ["DIGEST_CONFIG_FILE"] = str(config)  # what load_settings reads, as if set by hand


def digest_version() -> str:
    try:
        return importlib.metadata.version("digest")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        from digest import __version__

        return __version__


def print_version(value: bool) -> None:
    if value:
        print(f"digest {digest_version()}")
        raise typer.Exit(0)


def settings_or_exit(level: int | None = None, write: bool = False) -> Settings:
    """Settings, and logging set up as they ask (``log_format``); exit 2 naming a bad key.

    The data directory is checked here, once for every command: a file where it should be, or
    (``write``) one this uid cannot write, is one line and exit 2 rather than a traceback later.
    """
    try:
        settings = load_settings()
        check_data_dir(settings.data_dir, write)
    except DigestError as exc:
        fail(exc)
    configure_logging(settings.log_format, logging.INFO if _verbose else (level or logging.WARNING))
    return settings


@app.command()
def run(
    day: Annotated[
        str | None, typer.Option("--date", metavar="YYYY-MM-DD", help="Run as of this day (at most tomorrow).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Render and report; send and record nothing.")] = False,
) -> None:
    """Run one full daily cycle now: fetch, diff, match, render, deliver.

    A second run while one is running exits 1 with a message (the store is locked). SIGTERM or
    SIGINT finish the email being sent, record it and exit 0; the rest goes out next cycle. A
    --date past tomorrow exits 2 and changes nothing. Days older than catchup_days that no cycle
    fetched are named on stderr (and in the digest and `digest status`); they are not retried, so
    they alone do not make the exit status 1.
    """
    settings = settings_or_exit(write=True)
    as_of = parse_day(day)
    try:
        check_secrets(settings)
    except DigestError as exc:
        fail(exc)
    with stop_on_signals(announce_stop) as stop, send_progress() as progress:
        try:
            if as_of is not None:
                check_as_of(settings, as_of, "--date")  # before anything is opened: the store stays as it is
            report = run_once(settings, as_of, dry_run=dry_run, stop=stop, progress=progress)
        except DigestError as exc:
            fail(exc)
    out.print(report.summary())
    for problem in report.errors:
        print(f"digest: {problem}", file=sys.stderr)
    stopped_cleanly = report.stopped and report.failed == 0 and all(s.ok for s in report.sources)
    raise typer.Exit(0 if report.ok or stopped_cleanly else 1)


@app.command()
def serve() -> None:
    """The long-running service: the daily cycle on schedule.cron, and the web pages."""
    from digest.ops.service import serve as run_service

    settings = settings_or_exit(logging.INFO, write=True)
    logging.getLogger("digest.ops.service").info(
        "digest %s starting; %s; data_dir %s",
        digest_version(),
        settings_file_description(),
        settings.data_dir.absolute(),
    )
    try:
        check_secrets(settings)
        if is_postgres(settings.store.url):  # the three roles of a PostgreSQL deployment in one process
            from digest.ops.roles import web as run_roles

            run_roles(settings, with_scheduler=True, with_worker=True)
        else:
            run_service(settings)
    except DigestError as exc:
        fail(exc)


def run_role(role: str) -> None:
    """``digest web``/``scheduler``/``worker``: one role of a PostgreSQL deployment."""
    from digest.ops import roles

    settings = settings_or_exit(logging.INFO, write=True)
    if not is_postgres(settings.store.url):
        fail(f"`digest {role}` needs store.url = postgresql://…; use digest serve", 2)
    logging.getLogger("digest.ops.roles").info(
        "digest %s starting as %s; %s; data_dir %s",
        digest_version(),
        role,
        settings_file_description(),
        settings.data_dir.absolute(),
    )
    try:
        check_secrets(settings)
        {"web": roles.web, "scheduler": roles.scheduler, "worker": roles.worker}[role](settings)
    except DigestError as exc:
        fail(exc)


@app.command("web")
def web_command() -> None:
    """The web pages alone, on a PostgreSQL store (run any number behind a proxy)."""
    run_role("web")


@app.command("scheduler")
def scheduler_command() -> None:
    """The cycle on schedule.cron, queueing digests for `digest worker` (PostgreSQL store; one cycle at a time)."""
    run_role("scheduler")


@app.command("worker")
def worker_command() -> None:
    """Send queued digests over an SMTP connection of its own (PostgreSQL store; run any number)."""
    run_role("worker")


@app.command()
def subscribe(
    email: Annotated[str, typer.Argument(help="The subscriber's email address.")],
    rule: Annotated[
        list[str] | None,
        typer.Option("--keyword", "-k", help="A keyword rule; repeat for more. None: keep their rules."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="How to address them.")] = None,
    layout: Annotated[
        str | None,
        typer.Option("--layout", help="How their email shows each paper: full (with the abstract) or compact."),
    ] = None,
    daily: Annotated[bool, typer.Option("--daily", help="A digest every day (the default).")] = False,
    weekly: Annotated[
        str | None, typer.Option("--weekly", metavar="DAY", help="One digest a week, on DAY (mon..sun).")
    ] = None,
    hour: Annotated[
        str | None,
        typer.Option("--hour", metavar="H", help="Send at this hour (0-23) in --timezone; default: schedule.cron."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone", metavar="ZONE", help="Their IANA time zone (Europe/Berlin); default: schedule.timezone."
        ),
    ] = None,
    max_papers: Annotated[
        str | None,
        typer.Option("--max-papers", metavar="N", help="At most N papers (1-100) in full; none: no cap."),
    ] = None,
    feed_only: Annotated[
        bool | None,
        typer.Option("--feed-only/--email", help="Only their Atom feed, no digest email (--email: mail again)."),
    ] = None,
) -> None:
    """Add or replace an active subscriber (no confirmation mail: this is the operator's path).

    Without -k, changes only the options given for someone subscribed: their rules stay, and a
    paused or suspended person stays so. Options not given are kept.
    """
    settings = settings_or_exit(write=True)
    if layout is not None and layout not in LAYOUTS:
        fail(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}", 2)
    choices = subscribe_choices(daily, weekly, hour, timezone, max_papers, feed_only, settings.schedule.timezone)
    try:
        request = transfer.check_request(email, rule or [])
        for warning in request.warnings:
            print(f"digest: note: {warning}", file=sys.stderr)  # a warning, not a refusal
        with open_backend(settings.store.url, settings.data_dir) as store:
            subscriber, existed = transfer.subscribe(store, request, name, layout, utc_now(), choices)
    except RuleError as exc:
        from digest.matching.syntax import pointer

        print(pointer(exc), file=sys.stderr)  # the rule, and a caret under the column
        fail(exc)
    except DigestError as exc:
        fail(exc)
    verb = "updated" if existed else "subscribed"
    rules = ", ".join(subscriber.rules)
    out.print(f"{verb} {subscriber.email} with {len(subscriber.rules)} rule(s): {rules}", markup=False)
    out.print(f"  {Preferences.of(subscriber).describe()}", markup=False)


def subscribe_choices(
    daily: bool,
    weekly: str | None,
    hour: str | None,
    timezone: str | None,
    max_papers: str | None,
    feed_only: bool | None,
    service_zone: str,
) -> transfer.Choices:
    """``digest subscribe``'s options as :class:`~digest.state.transfer.Choices`; exit 2 for --daily with --weekly."""
    if daily and weekly is not None:
        fail("--daily and --weekly: choose one", 2)
    if weekly is not None:
        try:
            parse_weekday(weekly, "--weekly")
        except DigestError as exc:
            fail(exc)
    rhythm = "daily" if daily else (None if weekly is None else f"weekly:{weekly}")
    text: dict[str, str | None] = {
        "rhythm": rhythm,
        "hour": hour,
        "timezone": timezone,
        "max_papers": max_papers,
        "delivery": None if feed_only is None else ("feed" if feed_only else "email"),
    }
    labels = {"hour": "--hour", "timezone": "--timezone", "max_papers": "--max-papers", "layout": "--layout"}
    labels["rhythm"] = "--daily" if daily else "--weekly"
    return transfer.Choices(text, labels, service_zone)


@app.command()
def unsubscribe(email: Annotated[str, typer.Argument(help="The subscriber's email address.")]) -> None:
    """Remove a subscriber; their delivery history is kept so nothing is ever re-sent."""
    settings = settings_or_exit(write=True)
    address = email.strip().lower()
    try:
        if is_postgres(settings.store.url):  # no file lock to wait for: the row goes at once
            with open_backend(settings.store.url, settings.data_dir) as backend:
                removed = backend.remove_subscriber(address)
        else:
            with open_store(settings.data_dir, wait_seconds=UNSUBSCRIBE_WAIT_SECONDS) as store:
                removed = store.remove_subscriber(address)
    except CycleLockedError:
        removed = unsubscribe_beside_a_cycle(settings.data_dir, address)
    except DigestError as exc:
        fail(exc)
    if not removed:
        fail(f"no subscriber {email!r}: `digest subscribers` lists them", 2)
    out.print(f"unsubscribed {email}")


UNSUBSCRIBE_WAIT_SECONDS = 5.0  # then a cycle holds the store: record the unsubscribe beside it


def unsubscribe_beside_a_cycle(data_dir: Path, address: str) -> bool:
    """A cycle (``digest run`` or ``serve``'s) holds the store: a person who asks to leave is not
    refused. The line goes to ``unsubscribes.pending`` (:mod:`digest.state.departures`), which that cycle
    checks before each email it sends and every process applies when it reads the store."""
    from digest.state.departures import append_departure

    try:
        known = Store(data_dir, writable=False).subscriber(address) is not None
        if known:
            append_departure(data_dir, address, datetime.now(UTC))
    except DigestError as exc:
        fail(exc)
    except OSError as exc:
        fail(describe_os_error(exc, "record the unsubscribe in", data_dir / PENDING_FILE))
    if known:
        print(
            f"digest: a cycle holds the store: the unsubscribe is recorded in {PENDING_FILE}; "
            "that cycle sends them nothing more",
            file=sys.stderr,
        )
    return known


@app.command()
def subscribers() -> None:
    """List subscribers, their rules and their last delivery."""
    settings = settings_or_exit()
    try:
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            people = sorted(store.subscribers(), key=lambda s: s.email)
    except DigestError as exc:
        fail(exc)
    if not people:
        out.print("no subscribers yet: add one with `digest subscribe EMAIL -k RULE`")
        return
    from digest.ops.status import format_time

    # Their own rhythm, time, layout, cap and delivery, once anyone has chosen other than the defaults.
    chosen = {person.email: Preferences.of(person) for person in people}
    shown = any(choice != Preferences() for choice in chosen.values())
    table = Table("email", "name", "rules", "active", *(["delivery"] if shown else []), "last delivery")
    from digest.mail.bounces import read_state as bounce_state

    try:
        suspended = bounce_state(settings.data_dir)["suspended"]
    except DigestError as exc:
        fail(exc)
    for person in people:
        last = format_time(person.last_delivery_at, settings.schedule.timezone)
        active = "yes" if person.active else "no"
        if not person.active and person.email.lower() in suspended:  # digest resume EMAIL
            active = f"suspended: {suspended[person.email.lower()]['why']}"
        # Text, not markup: a rule such as /[a-z]+/ must print as written.
        delivery = [chosen[person.email].short()] if shown else []
        cells = (person.email, person.name or "", "; ".join(person.rules), active, *delivery, last)
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)


@app.command()
def bounces() -> None:
    """Read the bounce mailbox (bounces.imap_*): suspend addresses that bounce, unsubscribe complaints."""
    from digest.mail.bounces import apply_reports, mark_read, parse_report, read_mailbox

    settings = settings_or_exit()
    if not settings.bounces.imap_host:
        fail("bounces.imap_host is not set: name the IMAP server that receives bounces (DIGEST_BOUNCES__IMAP_HOST)", 2)
    try:
        imap, messages = read_mailbox(settings.bounces)
        reports = [report for _, message in messages for report in parse_report(message)]
        with open_backend(settings.store.url, settings.data_dir) as store:
            done = apply_reports(
                store,
                settings.data_dir,
                settings.resolved_secret_key(),
                reports,
                settings.bounces.soft_limit,
                utc_now(),
            )
            store.flush()
        mark_read(imap, [uid for uid, _ in messages])
    except DigestError as exc:
        fail(exc)
    out.print(
        f"read {len(messages)} message(s), {len(reports)} report(s): suspended {len(done.suspended)}, "
        f"unsubscribed {len(done.unsubscribed)} (complaints), soft bounces {len(done.soft)}, "
        f"about nobody we send to {done.unknown}",
        markup=False,
    )
    for email in done.suspended:
        out.print(f"  suspended {email} (digest resume {email})", markup=False)
    for email in done.unsubscribed:
        out.print(f"  unsubscribed {email} (complaint)", markup=False)


@app.command()
def resume(email: Annotated[str, typer.Argument(help="The subscriber's email address.")]) -> None:
    """Send to a paused or suspended (bounced) subscriber again, from the current look-back window."""
    from digest.mail.bounces import resume as resume_subscriber

    settings = settings_or_exit()
    try:
        with open_backend(settings.store.url, settings.data_dir) as store:
            found = resume_subscriber(store, settings.data_dir, email)
    except DigestError as exc:
        fail(exc)
    if not found:
        fail(f"no subscriber {email!r}", 1)
    out.print(f"resumed {email.strip().lower()}", markup=False)


@app.command()
def preview(
    email: Annotated[str, typer.Argument(help="The subscriber whose digest to render.")],
    day: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD", help="As of this day.")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE.html", help="Write the HTML here.")] = None,
) -> None:
    """Render a subscriber's digest from stored items without sending or recording anything."""
    settings = settings_or_exit(write=out_file is None)  # the HTML goes to data_dir/preview/ by default
    as_of = parse_day(day) or today_in(settings.schedule.timezone)
    try:
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            person = store.subscriber(email.strip().lower())
            if person is None:
                fail(f"no subscriber {email!r}: `digest subscribers` lists them", 2)
            digest = next_digest(store, person.email, as_of, settings.lookback_days) if person.by_email else None
        if not person.by_email:  # their papers go to their Atom feed only: say so rather than render nothing
            written = f"; {out_file} not written" if out_file else ""
            out.print(
                f"{person.email} gets no email (feed only): their papers are in their Atom feed "
                f"(`digest feed-url {person.email}`){written}",
                markup=False,
            )
            return
        if digest is None:
            written = f"; {out_file} not written" if out_file else ""
            out.print(f"nothing new for {person.email} as of {as_of}{written}")
            return
        html, message = render_preview(settings, digest)
    except DigestError as exc:
        fail(exc)
    target = out_file or settings.data_dir / PREVIEW_DIR / f"{person.email}-{as_of}.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, html)  # whole or not at all, 0600: it shows the subscriber's address
    except OSError as exc:
        fail(f"preview: {describe_os_error(exc, 'write', target)}", 2)
    out.print(f"{message.subject}\nHTML written to {target}", markup=False)


@app.command("feed-url")
def feed_url_command(email: Annotated[str, typer.Argument(help="The subscriber's email address.")]) -> None:
    """Print a subscriber's personal Atom feed address (under public_url; the same until they ask for a new one)."""
    from digest.signing import Signer
    from digest.web.feed import feed_url

    settings = settings_or_exit()
    try:
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            person = store.subscriber(email.strip().lower())
        signer = Signer(settings.resolved_secret_key())
    except DigestError as exc:
        fail(exc)
    if person is None:
        fail(f"no subscriber {email!r}: `digest subscribers` lists them", 2)
    out.print(feed_url(signer, settings.public_url, person), markup=False)


@app.command("try", context_settings={"ignore_unknown_options": True})
def try_command(
    rule: Annotated[str, typer.Argument(help="The rule to try, such as 'title:4090 OR \"video diffusion\"'.")],
    days: Annotated[int, typer.Option("--days", min=1, help="Look at papers listed in the last N days.")] = 7,
    day: Annotated[str | None, typer.Option("--date", help="The last day of the window (YYYY-MM-DD).")] = None,
) -> None:
    """Show which stored papers of the last N days a rule matches, and why; changes nothing.

    A rule that starts with '-' goes after '--': digest try --days 7 -- -survey
    """
    from digest.matching.syntax import pointer

    settings = settings_or_exit()
    try:
        parsed = parse_rule(rule)
    except RuleError as exc:
        print(pointer(exc), file=sys.stderr)
        fail(exc)
    end = parse_day(day) or today_in(settings.schedule.timezone)
    start = end - timedelta(days=days - 1)
    postgres = is_postgres(settings.store.url)
    if not postgres and not (settings.data_dir / STORE_FILE).exists():
        out.print(f"no papers stored yet in {settings.data_dir}: run `digest run` first, then try again", markup=False)
        return
    try:
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            items = store.items_listed_between(start, end)
            stored = store.seen_count if postgres else 1
    except DigestError as exc:
        fail(exc)
    if not stored:
        out.print(f"no papers stored yet in {redacted(settings.store.url)}: run `digest run` first", markup=False)
        return
    result = try_rule(parsed, items)
    plain = not out.is_terminal  # piped: no colour, matches marked [[so]]
    out.print(f"rule: {parsed.canonical}", markup=False)
    for warning in parsed.warnings:
        out.print(f"note: {warning}", markup=False)
    if parsed.is_exclusion:
        out.print("an exclusion: the papers it names are removed from the matches of your other rules")
    for number, entry in enumerate(result.entries, start=1):
        lines = describe(entry, plain)
        out.print()
        out.print(f"{number}. ", lines[0], sep="", end="\n")
        for line in lines[1:]:
            out.print("   ", line, sep="")
    out.print()
    out.print(summary(result, start.isoformat(), end.isoformat()), markup=False)
    if result.silent:
        out.print("found nothing: " + ", ".join(result.silent), markup=False)


@app.command()
def demo() -> None:
    """Quick start: a throw-away subscriber and one cycle on embedded defaults; prints the email's path."""
    settings = settings_or_exit(write=True)
    day = choose_day(settings)
    if day.unreachable is None:
        out.print(f"Using the live Hugging Face Daily Papers feed at {settings.sources.hf_papers.base_url}.")
    else:
        out.print(
            f"Hugging Face is not reachable ({day.unreachable}); "
            f"using the bundled sample of real listings as of {day.as_of}."
        )
    try:
        report, emails = run_demo(settings, day)
    except DigestError as exc:
        fail(exc)
    out.print(f"Rules: {', '.join(DEMO_RULES)}\n{report.summary()}")
    if not emails:
        out.print("No paper matched the demo rules today, so no email was written.")
        return
    html_path = extract_html(emails[-1])
    out.print(f"Email (.eml): {emails[-1].resolve()}\nOpen this in a browser: {html_path.resolve()}")
    if in_container() and Path("/data") in emails[-1].resolve().parents:  # the image's volume, not a dev container
        subject, text = email_part(emails[-1], "plain")
        out.print(f"\n--- the email (text part; Subject: {subject}) ---\n{text.rstrip()}\n---", markup=False)
        out.print(  # in a container (docker run --rm IMAGE demo) those paths die with it
            "These files are inside the container and go with it unless /data is mounted. To keep them: "
            'mkdir -p demo && docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/demo:/data" IMAGE demo',
            markup=False,
        )


@app.command("export")
def export_subscribers(
    file: Annotated[Path | None, typer.Argument(help="Write here instead of standard output (- is that too).")] = None,
) -> None:
    """Write subscribers and their rules as JSON lines, for backup and migration.

    FILE is written whole or not at all, mode 0600 (it holds every subscriber's address).
    """
    settings = settings_or_exit()
    if file is not None and str(file) == "-":  # as `digest backup -`: standard output
        file = None
    if file is not None and file.is_dir():
        fail(f"export: {file} is a directory: name a file, e.g. {file / 'subscribers.jsonl'}", 2)
    try:
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            people = store.subscribers()
    except DigestError as exc:
        fail(exc)
    text = transfer.export_lines(people)
    if file is None:
        sys.stdout.write(text)
    else:
        try:
            write_atomically(file, text.encode("utf-8"))
        except OSError as exc:
            fail(f"export: {describe_os_error(exc, 'write', file)}", 2)
        out.print(f"exported {len(people)} subscriber(s) to {file}")


@app.command("import")
def import_subscribers(file: Annotated[Path, typer.Argument(help="JSON lines as written by export.")]) -> None:
    """Add or replace subscribers from JSON lines; all or nothing, every bad line reported."""
    settings = settings_or_exit(write=True)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}", 2)
    try:
        people = transfer.parse_export(text, str(file), utc_now())
        with open_backend(settings.store.url, settings.data_dir) as store:
            imported = transfer.import_subscribers(store, people)
    except ImportRefused as exc:
        for problem in exc.problems:
            print(f"digest: {problem}", file=sys.stderr)
        fail(exc)
    except DigestError as exc:
        fail(exc)
    out.print(f"imported {imported} subscriber(s)")


@app.command()
def status(
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="How many cycles to show.")] = 10,
) -> None:
    """The last cycles (fetched, new, matched, sent, failed, per source), pending deliveries, next run."""
    from digest.ops.status import gather, status_lines

    settings = settings_or_exit()
    try:
        with open_backend(settings.store.url, settings.data_dir, write=False) as store:
            state = gather(settings, store, today_in(settings.schedule.timezone), utc_now(), last)
            queued = queue_line(store, settings.schedule.timezone)
    except DigestError as exc:
        fail(exc)
    for line in [*status_lines(settings, state), *queued]:
        out.print(line, markup=False)


def queue_line(store: object, zone: str) -> list[str]:
    """On PostgreSQL, the digests the scheduler queued that no worker has sent yet (``digest worker``)."""
    from digest.state.postgres.store import PostgresStore

    if not isinstance(store, PostgresStore):
        return []
    from digest.ops.status import format_time
    from digest.state.postgres.queue import queue_summary

    count, oldest, retried = queue_summary(store)
    if not count:
        return ["queued for the workers: none"]
    line = f"queued for the workers: {count} digest(s), the oldest since {format_time(oldest, zone)}"
    return [line + (f"; {retried} waiting to be tried again after a refusal" if retried else "")]


@app.command()
def doctor(
    repair: Annotated[
        bool, typer.Option("--repair", help="Restore a damaged store from its last good backup.")
    ] = False,
) -> None:
    """Check the store, its backup and the delivery journal; --repair restores a damaged store."""
    from digest.ops import doctor as checkup

    settings = settings_or_exit()
    if is_postgres(settings.store.url):
        from digest.ops.doctor_postgres import REPAIR_HINT, examine_postgres

        if repair:
            fail(f"--repair restores a TinyDB store from its backup; on PostgreSQL: {REPAIR_HINT}", 2)
        found = examine_postgres(settings.store.url, settings.data_dir)
    else:
        found = checkup.examine(settings.data_dir)
    for note in found.notes:
        out.print(note)
    if not found.writable:  # the first problem says why and what to do; nothing else matters before it
        fail(found.problems[0], 2)
    for problem in found.problems:
        print(f"digest: problem: {problem}", file=sys.stderr)
    if not repair:
        if found.problems:
            hint = "run `digest doctor --repair`" if found.backup_ok else "no good backup to restore from"
            hint = found.repair_hint or hint
            fail(f"{len(found.problems)} problem(s) found; {hint}", 1)
        out.print("no problems found")
        return
    try:
        out.print(checkup.repair(settings.data_dir))
    except DigestError as exc:
        fail(exc)


@app.command("backup")
def backup_command(
    file: Annotated[Path, typer.Argument(help="The archive to write (.tar.gz), outside data_dir; - for stdout.")],
) -> None:
    """Write the whole data dir to FILE (tar.gz, mode 0600), consistent also while `digest serve` runs.

    On PostgreSQL the archive also holds every table of the store, read in one snapshot."""
    from digest.ops.backup import backup

    settings = settings_or_exit()
    try:
        if is_postgres(settings.store.url):
            from digest.ops.backup_postgres import backup_postgres

            files, rows = backup_postgres(settings.store.url, settings.data_dir, file)
        else:
            files, rows = backup(settings.data_dir, file), {}
    except DigestError as exc:
        fail(exc)
    done = f"backed up {files} file(s) of {settings.data_dir} to {file}"
    if rows:
        done = (
            f"backed up {describe_rows(rows)} of {redacted(settings.store.url)} and {done.removeprefix('backed up ')}"
        )
    if str(file) == "-":  # standard output carries the archive
        print(done, file=sys.stderr)
    else:
        out.print(done, markup=False)


@app.command("restore")
def restore_command(file: Annotated[Path, typer.Argument(help="An archive written by `digest backup`.")]) -> None:
    """Unpack a backup into data_dir, which must be empty or missing; then start digest as usual.

    On PostgreSQL the tables go into store.url's database, which must hold no digest rows."""
    from digest.ops.backup import restore

    settings = settings_or_exit()
    try:
        if is_postgres(settings.store.url):
            from digest.ops.backup_postgres import restore_postgres

            files, rows = restore_postgres(file, settings.store.url, settings.data_dir)
        else:
            files, rows = restore(file, settings.data_dir), {}
    except DigestError as exc:
        fail(exc)
    tables = f"{describe_rows(rows)} into {redacted(settings.store.url)} and " if rows else ""
    out.print(f"restored {tables}{files} file(s) from {file} into {settings.data_dir}", markup=False)


def describe_rows(rows: dict[str, int]) -> str:
    """The rows a PostgreSQL backup or restore moved, for its one line: the tables people ask about."""
    return ", ".join(f"{rows.get(table, 0)} {table}" for table in ("subscribers", "deliveries", "items", "cycles"))


@app.command("migrate-store")
def migrate_store(
    to: Annotated[str, typer.Option("--to", help="The PostgreSQL store to copy into: postgresql://user@host/db.")],
) -> None:
    """Copy the TinyDB store (data_dir/digest.json) into an empty PostgreSQL database and check the
    counts; then set store.url to the same URL. The TinyDB store is left as it was."""
    settings = settings_or_exit()
    from digest.settings import redacted, store_kind

    try:
        kind = store_kind(to)
    except ValueError as exc:
        fail(f"--to {exc}", 2)
    if kind != "postgresql":
        fail(f"--to {redacted(to)!r}: migrate-store copies into PostgreSQL (postgresql://user@host/database)", 2)
    if is_postgres(settings.store.url):
        fail("store.url already names a PostgreSQL store: migrate-store copies from the TinyDB store in data_dir", 2)
    from digest.state.postgres.copy import copy_store

    try:
        counts = copy_store(settings.data_dir, to)
    except DigestError as exc:
        fail(exc)
    out.print(f"copied {counts.describe()} into {redacted(to)}; now set store.url to it", markup=False)


def main() -> None:
    try:
        app()
    except OSError as exc:  # a last net: a full or read-only disk met somewhere no command expected
        print(f"digest: error: {describe_os_error(exc, 'read or write')}", file=sys.stderr)
        sys.exit(1)
    except RuleError as exc:  # pragma: no cover - commands catch their own; a last net
        print(f"digest: error: {exc}", file=sys.stderr)
        sys.exit(2)
