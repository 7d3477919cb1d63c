-- Which replica wrote each row of the change feed: a replica skips its own rows when it
-- follows the feed, since it applied them already when it wrote them. Rows written
-- before this column existed have '' and are applied by every replica, as before.
ALTER TABLE changes ADD COLUMN replica TEXT NOT NULL DEFAULT '';
