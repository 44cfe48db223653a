"""The event log and the engine: how an event takes effect, live and in replay.

An event is validated (`events`), stored in the log and claimed (`ingestion`), and applied by
the one engine (`apply.apply_events`): money events set-based, runs of sign-ups (`signups`),
refunds (`refunds`) and redemptions (`redemptions`) set-based, every other type by its step
(`steps`). What an event earns
comes from the pure rules (`rules`) with the programme version in force at its time
(`configuration`, `versions`); the writes are set-based SQL (`bulk`), the messages go out after
commit (`outbox`) and the dashboard rollups follow through triggers (`rollups`). Staff and
portal actions are logged as events (`services`); the periodic jobs (`jobs`) and the sweeper
(`sweeper`) go through the same engine, and `verification` replays the log through it.
"""
