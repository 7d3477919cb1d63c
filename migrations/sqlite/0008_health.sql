-- Why the last health check failed (HTTP status, connection refused, timeout, the last
-- line of an exec check's output), as the agent reports it; '' while checks pass.
ALTER TABLE instances ADD COLUMN health_error TEXT NOT NULL DEFAULT '';
-- What an event is about: 'state' (an instance's state changed), 'health' (its health
-- verdict changed) or 'config' (its config files keep restarting it).
ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT 'state';
