"""Queue names; the spec's training.device picks one (cuda* -> gpu, anything else -> cpu)."""

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
# Webhook deliveries have a queue of their own: a slow receiver never holds up a training run.
WEBHOOK_QUEUE = "webhooks"
