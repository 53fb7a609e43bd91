"""Training utilities shared by the model commands (DCRRG, UAR): seeding, device and mixed precision,
DDP set-up from torchrun's environment, the thread policy, and a resumable per-step runner."""
