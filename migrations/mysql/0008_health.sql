-- Why the last health check failed (HTTP status, connection refused, timeout, the last
-- line of an exec check's output), as the agent reports it; '' while checks pass.
ALTER TABLE instances ADD COLUMN health_error VARCHAR(1024) NOT NULL DEFAULT '';
-- What an event is about: 'state' (an instance's state changed), 'health' (its health
-- verdict changed) or 'config' (its config files keep restarting it).
ALTER TABLE events ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'state';
