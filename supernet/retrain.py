"""`glora-retrain`: not built yet (issue #6 (retrain and export))."""


def main() -> None:
    raise SystemExit("glora-retrain: not implemented yet; it lands with issue #6 (retrain and export)")
