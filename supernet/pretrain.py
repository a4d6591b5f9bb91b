"""`glora-pretrain`: not built yet (issue #4 (embedded backbone pretraining))."""


def main() -> None:
    raise SystemExit("glora-pretrain: not implemented yet; it lands with issue #4 (embedded backbone pretraining)")
