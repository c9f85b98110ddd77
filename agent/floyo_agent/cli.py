def main():
    raise SystemExit("floyo-agent is not built yet")
