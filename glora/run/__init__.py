"""Run plumbing every stage shares: user-fixable errors, the one atomic write,
checkpoints, torch.distributed helpers, device choice and training-curve plots."""
