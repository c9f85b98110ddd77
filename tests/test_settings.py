"""Every setting read from the environment is listed in .env.example."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTING_READ = re.compile(r'(?:environ\.get|_int|_float|_bool|_json_setting)\(\s*"([A-Z][A-Z0-9_]+)"')


def listed_settings():
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]+)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_env_example_lists_every_setting():
    read = set()
    for source in (ROOT / "app").rglob("*.py"):
        read.update(SETTING_READ.findall(source.read_text()))

    missing = sorted(read - listed_settings())

    assert missing == [], f"add these to .env.example with their defaults: {missing}"


def test_env_example_lists_stripe_prices():
    listed = listed_settings()

    for plan in ("PRO", "TEAM"):
        for interval in ("MONTHLY", "YEARLY"):
            assert f"STRIPE_PRICE_{plan}_{interval}" in listed
