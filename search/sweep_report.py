"""`glora-sweep-report`: not built yet (issue #5 (budget sweeps))."""


def main() -> None:
    raise SystemExit("glora-sweep-report: not implemented yet; it lands with issue #5 (budget sweeps)")
