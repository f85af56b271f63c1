"""Webhooks: a signed POST to an experiment's callback_url when it reaches a terminal state.

`addresses` keeps callbacks away from internal networks, `signing` signs and verifies events,
`events` builds them, `outbox` records and schedules deliveries in the database, `delivery`
makes one HTTP attempt.
"""
