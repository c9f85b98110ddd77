"""The floyo-agent command: watch, record, status and flush."""

import argparse
import json
import logging
import os
import sys
import threading
from datetime import datetime

from floyo_agent import __version__
from floyo_agent.config import (
    CONFIG_FILENAME,
    DEFAULT_STATE_DIR,
    KEY_VARIABLE,
    MAX_BATCH_SIZE,
    SERVER_VARIABLE,
    ConfigError,
    load_settings,
)
from floyo_agent.diskqueue import DiskQueue, QueueError
from floyo_agent.events import EVENT_TYPES, new_event
from floyo_agent.sender import Sender
from floyo_agent.watcher import WatchAgent, WatchError, stop_on_signals

logger = logging.getLogger("floyo_agent")

# Exit statuses. 1 is a failure, such as events not delivered (they stay queued, or the server
# rejected them) or folders that cannot be watched. 2 is invalid usage or settings, as argparse uses
# for its own errors. 130 is an interruption by Ctrl-C, as shells report it.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"folder for the event queue and the default config file (default: {DEFAULT_STATE_DIR})",
    )
    common.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (default: {CONFIG_FILENAME} in the state folder, when it exists)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log every queued event and retry")
    common.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--server", metavar="URL", help=f"address of the Floyo server (or {SERVER_VARIABLE})")
    server.add_argument("--key", metavar="KEY", help=f"API key from Floyo's settings (or {KEY_VARIABLE})")

    parser = argparse.ArgumentParser(
        prog="floyo-agent",
        description="Watch folders and send file usage events to a Floyo server.",
        epilog="Run 'floyo-agent COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"floyo-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    watch = commands.add_parser(
        "watch",
        parents=[common, server],
        help="watch folders and send their file events",
        description=(
            "Watch folders recursively and send their created, modified, deleted and moved files as events. "
            "Events wait in a queue on disk while the server is unreachable. Stop with Ctrl-C."
        ),
    )
    watch.add_argument("folders", nargs="*", metavar="DIR", help="folders to watch (default: folders in the config)")
    watch.add_argument(
        "--ignore",
        action="append",
        metavar="PATTERN",
        help=(
            "also skip paths matching this glob; without a slash it matches any file or folder name, with a "
            "slash the path below the watched folder (repeatable)"
        ),
    )
    watch.add_argument(
        "--no-default-ignores",
        action="store_true",
        help="skip only the --ignore patterns, not the built-in list (see README)",
    )
    watch.add_argument(
        "--settle",
        type=float,
        metavar="SECONDS",
        help="seconds without events after which a file's burst of events is sent as one (default: 1)",
    )
    watch.add_argument(
        "--max-backoff",
        type=float,
        metavar="SECONDS",
        help="maximum wait between attempts while the server is unreachable (default: 300)",
    )
    watch.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"maximum events per request, 1 to {MAX_BATCH_SIZE} (default: 500)",
    )
    watch.add_argument("--tool", metavar="NAME", help="tool name sent with each event (default: floyo-agent)")
    watch.set_defaults(handler=run_watch)

    record = commands.add_parser(
        "record",
        parents=[common, server],
        help="send one event",
        description="Queue one event and send everything queued. A file path is sent as an absolute path.",
    )
    record.add_argument("path", metavar="PATH", help="the file (or, for command_executed and tool_used, the command)")
    record.add_argument("--type", default="file_opened", choices=EVENT_TYPES, help="event type (default: file_opened)")
    record.add_argument("--tool", metavar="NAME", help="tool that used the file (default: floyo-agent)")
    record.add_argument(
        "--metadata", metavar="JSON", help="a JSON object sent with the event, such as '{\"lines\": 3}'"
    )
    record.set_defaults(handler=run_record)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="show what is queued and when the server was last reached",
        description="Show the queued events, when the agent last reached the server and its last error.",
    )
    status.set_defaults(handler=run_status)

    flush = commands.add_parser(
        "flush",
        parents=[common, server],
        help="send the queued events now",
        description="Send every queued event now, without waiting for a running watch to retry.",
    )
    flush.set_defaults(handler=run_flush)
    return parser


def main(argv=None):
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        settings = load_settings(args)
        return args.handler(args, settings)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_USAGE
    except QueueError as error:
        logger.error("%s", error)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        logger.warning("Interrupted; queued events stay in the state folder")
        return EXIT_INTERRUPTED


def run_watch(args, settings):
    """Watch the folders until Ctrl-C or SIGTERM."""
    settings.require_server()
    if not settings.folders:
        raise ConfigError("No folder to watch: name one or more folders, or add folders = [...] to the config file.")
    for folder in settings.folders:
        if not os.path.isdir(os.path.expanduser(folder)):
            raise ConfigError(f"Cannot watch {folder}: it is not a folder. Check the path.")

    with DiskQueue(settings.state_dir) as queue:
        sender = Sender(queue, settings.server, settings.key, batch_size=settings.batch_size)
        agent = WatchAgent(
            settings.folders,
            queue,
            sender,
            ignore_patterns=settings.ignore_patterns,
            settle_seconds=settings.settle,
            max_backoff=settings.max_backoff,
            tool=settings.tool,
        )
        logger.info("Sending events to %s; queue in %s", sender.server_url, queue.path)
        stop = threading.Event()
        stop_on_signals(stop)
        try:
            agent.run(stop)
        except WatchError as error:
            logger.error("%s", error)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            logger.warning("Stopped at once; queued events stay in %s", queue.path)
    return 0


def run_record(args, settings):
    """Queue one event, then send everything queued."""
    settings.require_server()
    metadata = _parse_metadata(args.metadata)
    path = os.path.abspath(os.path.expanduser(args.path)) if args.type.startswith("file_") else args.path
    event = new_event(args.type, path, tool=args.tool or settings.tool, metadata=metadata)

    with DiskQueue(settings.state_dir) as queue:
        queue.add([event])
        sender = Sender(queue, settings.server, settings.key, batch_size=settings.batch_size)
        report = sender.flush()
    _print_report(report, settings)
    return 0 if report.error is None and not report.remaining else EXIT_FAILURE


def run_flush(args, settings):
    """Send every queued event now."""
    settings.require_server()
    with DiskQueue(settings.state_dir) as queue:
        sender = Sender(queue, settings.server, settings.key, batch_size=settings.batch_size)
        report = sender.flush()
    _print_report(report, settings)
    return 0 if report.error is None and not report.remaining else EXIT_FAILURE


def run_status(args, settings):
    """Print the queue size, its oldest event, the last contact with the server and the last error."""
    with DiskQueue(settings.state_dir) as queue:
        count = queue.count()
        oldest = queue.oldest_queued_at()
        state = queue.state()
        path = queue.path

    print(f"Queue: {path}")
    print(f"Queued events: {count}")
    if oldest:
        print(f"Oldest queued: {oldest} ({_age(oldest)} ago)")
    last_success = state["last_success_at"]
    if last_success:
        print(f"Last reached the server: {last_success} ({_age(last_success)} ago)")
    else:
        print("Last reached the server: never")
    if state["last_error"]:
        print(f"Last error: {state['last_error_at']}: {state['last_error']}")
    else:
        print("Last error: none")
    return 0


def _parse_metadata(raw):
    if raw is None:
        return {}
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"--metadata is not valid JSON ({error}); give an object such as '{{\"lines\": 3}}'."
        ) from error
    if not isinstance(metadata, dict):
        raise ConfigError(f"--metadata must be a JSON object such as '{{\"lines\": 3}}', got {raw!r}.")
    return metadata


def _print_report(report, settings):
    if report.delivered or report.rejected:
        print(
            f"Sent: {report.accepted} accepted, {report.duplicates} duplicates, {report.rejected} rejected "
            "(rejected events are dropped; the log names them)"
        )
    if report.error:
        print(f"Not sent: {report.error}", file=sys.stderr)
    if report.remaining:
        print(
            f"Queued events not sent yet: {report.remaining}, kept in {settings.state_dir}; "
            "'floyo-agent flush' or a running 'floyo-agent watch' sends them later."
        )
    elif not (report.delivered or report.rejected):
        print("Nothing to send: the queue is empty.")


def _age(timestamp):
    """Return how long ago an ISO 8601 timestamp was, such as '5 min' or '3 h'."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return "unknown time"
    seconds = max(0, int((datetime.now(moment.tzinfo) - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _configure_logging(args):
    level = logging.INFO
    if args.verbose:
        level = logging.DEBUG
    elif args.quiet:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
