"""Queue and task names; the spec's training.device picks a run's queue (cuda* -> gpu, else cpu)."""

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
# Webhook deliveries have a queue of their own: a slow receiver never holds up a training run.
WEBHOOK_QUEUE = "webhooks"

EXECUTE_RUN = "dfp.execute_run"
# One row block of a fanned-out exact analysis (dfp.fanout), on its run's queue.
EXECUTE_BLOCK = "dfp.execute_block"
DELIVER_WEBHOOK = "dfp.deliver_webhook"
