"""``jobq``'s command line: its commands, their options, and the checks argparse cannot express.

Every command takes --auth/--jobs/--ca (where the services are, how to trust them) and the
commands that print jobs take --json, after the command's name (``jobq list --json``). A usage
error exits 2, as argparse does, before any service is called.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from jobqueue.cli.exits import EPILOG
from jobqueue.cli.jobfile import BadJob, parse_priority, parse_request_id
from jobqueue.client import JobPriority, JobStatus

DESCRIPTION = """\
The Job Queue Processor from the command line: log in once, then submit jobs, look at them,
wait for them and watch them. `jobq COMMAND --help` tells more about each command.
"""

SUBMIT_EPILOG = """\
PAYLOAD is JSON: '"hello"', 10, '{"a": 1}'. A word that is not JSON (hello) is sent as that
string; to send a string that is also JSON (10, true), quote it: '"10"'.

--file FILE (or - for stdin) has one job per line, e.g.
  {"type": "reverse_string", "payload": "abc", "priority": "high", "max_attempts": 3,
   "timeout_seconds": 60, "request_id": "0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11"}
(all but type and payload optional; --priority, --max-attempts and --timeout apply to lines
that do not say). The whole file is checked first: a bad line is reported with its number
and nothing is sent. Jobs go 1,000 per call, each call stored whole or not at all.
"""


def build() -> argparse.ArgumentParser:
    """The parser of ``jobq``'s arguments."""
    parser = argparse.ArgumentParser(
        prog="jobq", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    service = _service_options()
    printing = _json_option()

    def command(name: str, summary: str, *parents: argparse.ArgumentParser, **kwargs: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary,
            parents=[service, *parents],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,  # type: ignore[arg-type]
        )

    login = command("login", "log in and store the token for the other commands")
    login.add_argument("--email", help="the account's email (asked for when absent)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    command("logout", "forget the stored token")
    register = command("register", "create an account (then `jobq login`)")
    register.add_argument("--email", help="the new account's email (asked for when absent)")
    register.add_argument("--name", help="the name to show (default: the email's part before @)")
    register.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")

    submit = command("submit", "submit a job, or a file of jobs", printing, epilog=SUBMIT_EPILOG)
    submit.add_argument("type", nargs="?", metavar="TYPE", help="the job type (`jobq types` lists them)")
    submit.add_argument("payload", nargs="?", metavar="PAYLOAD", help="the payload, as JSON (see below)")
    submit.add_argument("--file", metavar="FILE", help="submit the jobs of FILE (JSON lines; - for stdin) instead")
    submit.add_argument("--priority", type=_priority, help="low, normal or high (default: normal)")
    submit.add_argument(
        "--max-attempts", type=_count, default=0, metavar="N", help="attempts in all (default: the type's)"
    )
    submit.add_argument("--timeout", type=_count, default=0, metavar="SECONDS", help="how long one attempt may run")
    submit.add_argument(
        "--request-id", type=_request_id, metavar="UUID", help="a UUID: submitting again with it gives the same job"
    )
    submit.add_argument("--wait", action="store_true", help="wait until the job is finished (exit codes: jobq --help)")
    submit.add_argument(
        "--timeout-wait", type=_seconds, default=600.0, metavar="SECONDS", help="give up waiting after (default 600)"
    )

    get = command("get", "show a job: its result or error in full", printing)
    get.add_argument("id", metavar="ID")
    get.add_argument("--history", action="store_true", help="and every attempt: worker, outcome, error")

    listing = command("list", "list your jobs, newest first", printing)
    _filters(listing)
    listing.add_argument("--limit", type=_count, default=50, metavar="N", help="at most N jobs (0: all; default 50)")

    watch = command("watch", "print a job's states until it is finished, or every change to your jobs", printing)
    watch.add_argument("id", nargs="?", metavar="ID", help="the job; without it, watch all your jobs until Ctrl-C")
    _filters(watch)
    watch.add_argument("--all-users", action="store_true", help="everyone's jobs (operators only)")

    cancel = command("cancel", "cancel a job that has not finished", printing)
    cancel.add_argument("id", metavar="ID")
    rerun = command("rerun", "run a FAILED job again", printing)
    rerun.add_argument("id", metavar="ID")
    rerun.add_argument(
        "--max-attempts", type=_count, default=0, metavar="N", help="attempts it gets (default: the service's)"
    )

    dead = command("dead", "list everyone's FAILED jobs, or run them again (operators only)", printing)
    dead.add_argument("--type", dest="job_type", default="", metavar="TYPE", help="only jobs of this type")
    dead.add_argument("--rerun", action="store_true", help="run every one of them again")
    dead.add_argument(
        "--max-attempts", type=_count, default=0, metavar="N", help="with --rerun: the attempts each gets"
    )
    dead.add_argument("--limit", type=_count, default=50, metavar="N", help="at most N jobs (0: all; default 50)")

    command("types", "list the job types the service accepts", printing)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed arguments, once the combinations argparse cannot check are right (else exit 2)."""
    args = parser.parse_args(argv)
    if args.command == "submit":
        if args.file is not None and (args.type is not None or args.payload is not None):
            parser.error("submit: give TYPE and PAYLOAD, or --file, not both")
        if args.file is None and args.payload is None:
            parser.error("submit: give TYPE and PAYLOAD (or --file FILE)")
        if args.file is not None and (args.wait or args.request_id is not None):
            parser.error("submit --file: --wait and --request-id are for one job (a line may have a request_id)")
    if args.command == "watch" and args.id is not None and (args.status or args.job_type or args.all_users):
        parser.error("watch ID: --status, --type and --all-users are for watching without an id")
    if args.command == "dead" and not args.rerun and args.max_attempts:
        parser.error("dead: --max-attempts goes with --rerun")
    return args


def _version() -> str:
    """The installed client library's version (jobq is part of it)."""
    try:
        return metadata.version("jobqueue-client")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def _service_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("services")
    group.add_argument("--auth", metavar="HOST:PORT", help="the auth service (env JOBQ_AUTH_ADDRESS; localhost:5001)")
    group.add_argument("--jobs", metavar="HOST:PORT", help="the job service (env JOBQ_JOBS_ADDRESS; localhost:5002)")
    group.add_argument("--ca", metavar="FILE", help="use TLS, trusting the certificate authority in FILE (PEM)")
    group.add_argument("--tls", action="store_true", help="use TLS, trusting the system's certificate authorities")
    return options


def _json_option() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON lines (the API's field names), not a table")
    return options


def _filters(parser: argparse.ArgumentParser) -> None:
    names = [status.name.lower() for status in JobStatus if status != JobStatus.UNSPECIFIED]
    parser.add_argument("--status", type=_status, metavar="STATUS", help=f"only jobs in it: {', '.join(names)}")
    parser.add_argument("--type", dest="job_type", default="", metavar="TYPE", help="only jobs of this type")


def _status(text: str) -> JobStatus:
    try:
        status = JobStatus[text.upper()]
    except KeyError:
        status = JobStatus.UNSPECIFIED
    if status == JobStatus.UNSPECIFIED:
        raise argparse.ArgumentTypeError(f"no status {text!r}")
    return status


def _priority(text: str) -> JobPriority:
    try:
        return parse_priority(text)
    except BadJob as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _request_id(text: str) -> str:
    try:
        return parse_request_id(text)
    except BadJob as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return seconds
