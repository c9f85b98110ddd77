"""Suggestions made from patterns: title, evidence, time saved, sample code and a workflow draft.

Pure functions of a pattern's kind and data, so the service can build them in bulk. Only co_used,
sequence, recurrence and produced patterns get a suggestion; frequent files, types and tools are
shown as facts.

Time saved is an estimate: occurrences per month × minutes per occurrence, where occurrences per
month are the pattern's sessions (weeks for a recurrence) divided by the months the organization's
events span (at least one), and minutes per occurrence are the assumptions in
MINUTES_PER_OCCURRENCE. The ranking score is that estimate times the pattern's strength (degree,
confidence or share, from 0 to 1); the service applies the organization's feedback weights on top.
"""

import glob
import textwrap
from dataclasses import dataclass

SUGGESTED_KINDS = ("co_used", "sequence", "recurrence", "produced")
# Assumed minutes one occurrence costs by hand. co_used: finding the companion file, or fixing it
# when it was forgotten. sequence: per step after the first, opening the next file. recurrence:
# remembering and preparing the weekly or daily task. produced: running the command and checking
# its output.
MINUTES_PER_OCCURRENCE = {"co_used": 1.0, "sequence": 0.5, "recurrence": 2.0, "produced": 1.5}
DAYS_PER_MONTH = 30.44
TITLE_MAX_LENGTH = 300
# The workflow step that waits before a reminder, so that a companion edit made right away is not
# reminded about.
REMINDER_DELAY_SECONDS = 600


@dataclass(frozen=True)
class SuggestionContext:
    # Months covered by the organization's events, at least 1.
    months_observed: float
    # Where the drafts' notify steps send to: the organization owner's email, or "" if unknown.
    notify_to: str = ""


def months_between(first_time, last_time):
    """Return the months between two times in seconds, at least 1."""
    if first_time is None or last_time is None:
        return 1.0
    return max(1.0, (last_time - first_time) / (DAYS_PER_MONTH * 86400))


def build_suggestion(kind, data, context):
    """Return the suggestion fields for a pattern, or None for kinds that get no suggestion."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        return None
    suggestion = builder(data, context)
    suggestion["title"] = _truncate(suggestion["title"], TITLE_MAX_LENGTH)
    return suggestion


def pattern_summary(kind, data):
    """Describe a pattern in one line for lists and pages."""
    if kind == "frequent_file":
        return f"{data['path']}: {data['events']} events in {data['sessions']} sessions"
    if kind == "frequent_type":
        return f"{data['extension']} files: {data['events']} events in {data['sessions']} sessions"
    if kind == "frequent_tool":
        return f"{data['tool']}: {data['events']} events in {data['sessions']} sessions"
    if kind == "co_used":
        first, second = data["files"]
        return f"{first} ↔ {second}: {data['shared_sessions']} shared sessions, degree {data['degree']} %"
    if kind == "sequence":
        return f"{' → '.join(data['steps'])}: in {data['support']} sessions"
    if kind == "recurrence":
        subject = data["path"] if data["subject"] == "file" else " → ".join(data["steps"])
        return f"{subject}: {data['when']}, in {data['weeks']} weeks"
    if kind == "produced":
        return f"{data['command']} produces {data['product']}: in {data['sessions']} sessions"
    return kind


def _estimate(kind, occurrences, context, strength, per_occurrence=None):
    minutes = MINUTES_PER_OCCURRENCE[kind] if per_occurrence is None else per_occurrence
    per_month = occurrences / context.months_observed
    saved = round(per_month * minutes, 2)
    evidence = {"occurrences_per_month": round(per_month, 3), "minutes_per_occurrence": minutes}
    return saved, saved * strength, evidence


# Co-used files


def _co_used(data, context):
    first, second = data["files"]
    sessions_first, sessions_second = data["file_sessions"]
    # Trigger on the file that more surely brings the other along.
    if data["confidence_first_to_second"] >= data["confidence_second_to_first"]:
        source, target, source_sessions = first, second, sessions_first
    else:
        source, target, source_sessions = second, first, sessions_second
    shared = data["shared_sessions"]
    saved, score, estimate = _estimate("co_used", shared, context, data["degree"] / 100)
    evidence = {
        "shared_sessions": shared,
        "degree": data["degree"],
        "sessions_first": sessions_first,
        "sessions_second": sessions_second,
        "confidence": data["confidence"],
        "lift": data["lift"],
        **estimate,
    }
    description = (
        f"{target} changed in {shared} of the {source_sessions} sessions in which {source} changed "
        f"(change-coupling degree {data['degree']} %)."
    )
    draft = _workflow(
        f"Check {target} after {source} changes",
        description,
        {"type": "event_match", "event_type": "file_modified", "path_glob": glob.escape(source)},
        [
            _step("wait", "delay", [], {"seconds": REMINDER_DELAY_SECONDS}, REMINDER_DELAY_SECONDS + 60),
            _notify_step(
                "remind",
                ["wait"],
                context,
                f"{source} changed: check {target}",
                f"{{{{ trigger.path }}}} changed. {target} usually changes with it "
                f"({shared} of {source_sessions} sessions).",
            ),
        ],
    )
    return {
        "title": f"When {source} changes, update {target} too",
        "evidence": evidence,
        "minutes_saved_per_month": saved,
        "score": score,
        "sample_code": _co_used_code(source, target, shared, source_sessions),
        "workflow_draft": draft,
    }


def _co_used_code(source, target, shared, source_sessions):
    return _script(
        f"Warn when {source} changed later than {target}: they changed together in {shared} of "
        f"{source_sessions} sessions. Run it from the folder the paths are relative to.",
        f"""
        import sys
        from pathlib import Path

        PAIR = ({source!r}, {target!r})
        # How much later one file may be saved than the other before they count as out of step.
        GRACE_SECONDS = {REMINDER_DELAY_SECONDS}


        def main():
            modified = {{}}
            for name in PAIR:
                path = Path(name)
                if not path.exists():
                    print(f"missing: {{name}}")
                    return 2
                modified[name] = path.stat().st_mtime
            newer, older = sorted(PAIR, key=modified.get, reverse=True)
            if modified[newer] - modified[older] > GRACE_SECONDS:
                print(f"{{newer}} changed after {{older}}; they usually change together. Check {{older}}.")
                return 1
            print(f"in step: {{PAIR[0]}} and {{PAIR[1]}}")
            return 0
        """,
    )


# Sequences


def _sequence(data, context):
    steps = data["steps"]
    first, rest = steps[0], steps[1:]
    support = data["support"]
    strength = data.get("confidence", 1.0)
    per_occurrence = MINUTES_PER_OCCURRENCE["sequence"] * (len(steps) - 1)
    saved, score, estimate = _estimate("sequence", support, context, strength, per_occurrence)
    evidence = {
        "support": support,
        "steps": len(steps),
        "median_gap_seconds": data["median_gap_seconds"],
        "confidence": strength,
        **estimate,
    }
    chain = " → ".join(steps)
    description = (
        f"Seen in {support} sessions: {chain}, with a typical gap of {_duration(data['median_gap_seconds'])} "
        "between steps."
    )
    draft = _workflow(
        f"Next steps after {first}",
        description,
        {"type": "event_match", "event_type": "file_modified", "path_glob": glob.escape(first)},
        [_notify_step("next", [], context, f"Next after {first}", f"Next: {', then '.join(rest)}.")],
    )
    return {
        "title": f"After {first}, continue with {' → '.join(rest)}",
        "evidence": evidence,
        "minutes_saved_per_month": saved,
        "score": score,
        "sample_code": _sequence_code(steps, support),
        "workflow_draft": draft,
    }


def _sequence_code(steps, support):
    return _script(
        f"Print the steps that usually follow the one changed last ({support} sessions did them in this "
        "order). Run it from the folder the paths are relative to.",
        f"""
        import sys
        from pathlib import Path

        STEPS = {list(steps)!r}


        def main():
            changed = [(Path(step).stat().st_mtime, index) for index, step in enumerate(STEPS) if Path(step).exists()]
            if not changed:
                print("none of the steps exist here: " + ", ".join(STEPS))
                return 2
            _, last = max(changed)
            following = STEPS[last + 1 :]
            if not following:
                print(f"{{STEPS[last]}} was the last step; the sequence is complete.")
            else:
                print(f"{{STEPS[last]}} changed last; next: " + ", then ".join(following))
            return 0
        """,
    )


# Recurrence


def _recurrence(data, context):
    if data["subject"] == "file":
        subject, path = data["path"], data["path"]
    else:
        subject, path = " → ".join(data["steps"]), data["steps"][0]
    when = data["when"]
    saved, score, estimate = _estimate("recurrence", data["weeks"], context, data["share"])
    evidence = {
        "weeks": data["weeks"],
        "days": data["days"],
        "active_days": data["active_days"],
        "share": data["share"],
        **estimate,
    }
    description = (
        f"{subject} came back {when} in {data['weeks']} weeks; {data['days']} of the "
        f"{data['active_days']} days it was used fall in that slot."
    )
    draft = _workflow(
        f"{subject} {when}",
        description,
        {"type": "schedule", "cron": data["cron"], "timezone": "UTC"},
        [_notify_step("remind", [], context, f"Time for {path}", f"It is {when}: time for {subject}.")],
    )
    return {
        "title": f"Prepare {subject} {when}" if data["weekday"] is None else f"Prepare {subject} on {when}",
        "evidence": evidence,
        "minutes_saved_per_month": saved,
        "score": score,
        "sample_code": _recurrence_code(path, data["weekday"], _slot_hour(data), when),
        "workflow_draft": draft,
    }


def _slot_hour(data):
    return data["hour"] if data["hour"] is not None else int(data["cron"].split()[1])


def _recurrence_code(path, weekday, hour, when):
    return _script(
        f"Remind that {path} is due: it was used {when}. Schedule it with cron (times in UTC), for "
        f"example: {_cron_comment(weekday, hour)}",
        f"""
        import sys
        from datetime import datetime, timedelta, timezone
        from pathlib import Path

        PATH = {path!r}
        WEEKDAY = {weekday!r}  # Monday is 0; None means every day.
        HOUR = {hour!r}  # UTC


        def last_slot(now):
            slot = now.replace(hour=HOUR, minute=0, second=0, microsecond=0)
            if slot > now:
                slot -= timedelta(days=1)
            while WEEKDAY is not None and slot.weekday() != WEEKDAY:
                slot -= timedelta(days=1)
            return slot


        def main():
            since = last_slot(datetime.now(timezone.utc))
            path = Path(PATH)
            if path.exists():
                modified = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
                if modified >= since:
                    print(f"{{PATH}} is done for this time: changed {{modified:%Y-%m-%d %H:%M}} UTC.")
                    return 0
            print(f"{{PATH}} is due: it usually changes {when}, and it has not since {{since:%Y-%m-%d %H:%M}} UTC.")
            return 1
        """,
    )


def _cron_comment(weekday, hour):
    day = "*" if weekday is None else str((weekday + 1) % 7)
    return f"'0 {hour} * * {day} cd /path/to/project && python3 due.py'."


# Produced files


def _produced(data, context):
    command, product = data["command"], data["product"]
    saved, score, estimate = _estimate("produced", data["sessions"], context, data["share"])
    evidence = {
        "sessions": data["sessions"],
        "command_sessions": data["command_sessions"],
        "share": data["share"],
        "median_delay_seconds": data["median_delay_seconds"],
        **estimate,
    }
    description = (
        f"In {data['sessions']} of the {data['command_sessions']} sessions that ran {command}, {product} was "
        f"created after it, typically {_duration(data['median_delay_seconds'])} later."
    )
    product_glob = product if data["match"] == "glob" else glob.escape(product)
    draft = _workflow(
        f"Check what {command} produces",
        description,
        {
            "type": "event_match",
            "event_type": data.get("command_event_type", "command_executed"),
            "path_glob": glob.escape(command),
        },
        [
            _step("wait", "delay", [], {"seconds": max(60, int(data["median_delay_seconds"]) * 2)}, 3600),
            _step("check", "file", ["wait"], {"operation": "list", "path_glob": product_glob}, 60),
            _notify_step(
                "tell",
                ["check"],
                context,
                f"{command} ran",
                f"{command} ran; it usually produces {product}. Found: {{{{ steps.check.output.files }}}}",
            ),
        ],
    )
    return {
        "title": f"Run {command} and check that it produces {product}",
        "evidence": evidence,
        "minutes_saved_per_month": saved,
        "score": score,
        "sample_code": _produced_code(command, product_glob, product),
        "workflow_draft": draft,
    }


def _produced_code(command, product_glob, product):
    return _script(
        f"Run {command} and report whether it produced {product}, as it usually does. Run it from the folder "
        "the paths are relative to.",
        f"""
        import glob
        import os
        import shlex
        import subprocess
        import sys

        COMMAND = {command!r}
        PRODUCT_GLOB = {product_glob!r}


        def command_line():
            if COMMAND.endswith(".py"):
                return [sys.executable, COMMAND]
            if COMMAND.endswith(".sh"):
                return ["sh", COMMAND]
            return shlex.split(COMMAND)


        def products():
            return {{path: os.path.getmtime(path) for path in glob.glob(PRODUCT_GLOB)}}


        def main():
            before = products()
            completed = subprocess.run(command_line(), check=False)
            if completed.returncode != 0:
                print(f"{{COMMAND}} failed with exit status {{completed.returncode}}")
                return completed.returncode
            made = sorted(path for path, modified in products().items() if before.get(path) != modified)
            if not made:
                print(f"{{COMMAND}} ran but produced nothing matching {{PRODUCT_GLOB}}")
                return 1
            print("produced: " + ", ".join(made))
            return 0
        """,
    )


_BUILDERS = {"co_used": _co_used, "sequence": _sequence, "recurrence": _recurrence, "produced": _produced}


# Shared pieces


def _script(docstring, body):
    header = f'#!/usr/bin/env python3\n"""{_docstring_text(docstring)}"""\n'
    main = '\n\nif __name__ == "__main__":\n    sys.exit(main())\n'
    return header + textwrap.dedent(body).rstrip() + "\n" + main


def _docstring_text(text):
    # Paths come from users: keep them from closing the docstring or starting an escape.
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return "\n".join(textwrap.wrap(text, 96))


def _workflow(name, description, trigger, steps):
    return {"name": _truncate(name, 200), "description": description, "trigger": trigger, "steps": steps}


def _step(step_id, step_type, depends_on, config, timeout_seconds, retries=0, on_failure="stop"):
    return {
        "id": step_id,
        "type": step_type,
        "depends_on": depends_on,
        "config": config,
        "timeout_seconds": timeout_seconds,
        "retries": retries,
        "on_failure": on_failure,
    }


def _notify_step(step_id, depends_on, context, subject, body):
    config = {"channel": "email", "to": context.notify_to, "subject": _truncate(subject, 200), "body": body}
    return _step(step_id, "notify", depends_on, config, 30, retries=2, on_failure="continue")


def _duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _truncate(text, length):
    return text if len(text) <= length else text[: length - 1] + "…"
