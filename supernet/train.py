"""`glora-train`: not built yet (issue #4 (supernet training))."""


def main() -> None:
    raise SystemExit("glora-train: not implemented yet; it lands with issue #4 (supernet training)")
