"""Run the agent as `python -m floyo_agent`, the same as the `floyo-agent` command."""

from floyo_agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
