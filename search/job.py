"""`glora-search`: not built yet (issue #5 (evolutionary search))."""


def main() -> None:
    raise SystemExit("glora-search: not implemented yet; it lands with issue #5 (evolutionary search)")
